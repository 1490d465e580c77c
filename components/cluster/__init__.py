"""Cluster-side plumbing: running a step on KubeRay, rolling a model out on KServe, and the Kubernetes client setup."""
