"""Running NeuAvatar's parts on one machine without Docker: the broker, the object store,
Prometheus and the four services, as child processes that ``neuavatar stack`` starts and stops."""

from neuavatar.stack.process import Managed, free_port, port_open, wait_for_port

__all__ = ["Managed", "free_port", "port_open", "wait_for_port"]
