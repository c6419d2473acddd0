"""Kubernetes and mesh metadata: an informer cache of the API objects the agent needs, pid -> container
-> pod resolution from cgroups, and address -> identity for both ends of every exchange and flow."""
