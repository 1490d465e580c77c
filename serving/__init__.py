"""KServe predictors for the homefeed: retrieval (CPU), ranking (GPU when present) and the homefeed that chains them.

Modules: `online` (model inputs from the Feast online store), `payload` (v1 request parsing, 400s for client
mistakes), `retrieval`, `ranking`, `homefeed` (the kserve.Model subclasses), `server` (factories, `serve`,
`rest_app`), `launcher` (servers as local processes on loopback) and `__main__` (`python -m serving ...`).
"""
