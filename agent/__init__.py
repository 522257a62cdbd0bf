"""kernsplit agent: the configuration model, the dataplanes and the node agent."""
