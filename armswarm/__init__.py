"""armswarm: ARM single-board computers as a Docker Swarm, managed from one Salt master."""

__version__ = "0.1.0"
