"""One module per `kernsplit` subcommand."""
