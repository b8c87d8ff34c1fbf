"""Local stand-ins for the external services efm-pipelines talks to, spoken to over sockets."""
