"""proxy-init: transparent interception of a pod's TCP traffic (init container)."""
