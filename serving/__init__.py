"""KServe predictors for the homefeed: retrieval (CPU), ranking (GPU when present) and the homefeed that chains them.

Modules: `retrieval`, `ranking`, `homefeed` (the kserve.Model subclasses); `online` (model inputs from the Feast
online store); `corpus` (the serving corpus in memory: candidates' interests, the popular-pin fallbacks); `scorer`
(ranking's forward pass: once-per-user work, bf16, torch.compile); `payload` and `v2` (request parsing for the v1
and v2 protocols, 400s for client mistakes); `observe` (Prometheus stage metrics, request ids); `server`
(factories, `serve`, `rest_app`) and `__main__`
(`python -m serving ...`).
"""
