"""The pipelines' shared stages: each function adds its tasks to the pipeline being defined and returns them.

`homefeed_training` and `homefeed_retraining` differ only in their data (a whole source, or its latest window); both
then train, evaluate, gate and, when the gate passes, index and deploy. `embedding_refresh` reuses the release
stage with the champion's models. Resource requests size the pods on a cluster; kfp.local ignores them.
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from pipelines import kfp_components as c
from pipelines.params import PipelineParams
from pipelines.ray_backend import WORKSPACE_MOUNT, WORKSPACE_PVC

# The registry's S3 credentials (manifests/), as the environment boto3 reads. Optional: a registry on a mounted
# path needs none, and a missing Secret must not stop such a run.
REGISTRY_SECRET = "homefeed-registry-s3"
REGISTRY_ENV = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
# The cluster's Milvus token ("user:password", manifests/base/index/milvus.yaml), as the environment
# components/index/client.py reads. Optional: a run with index_uri empty builds a Milvus Lite file and needs none.
MILVUS_SECRET = "homefeed-milvus"
MILVUS_ENV = {"token": "MILVUS_TOKEN"}
# The cluster Redis' password (manifests/base/features/redis.yaml), as components/features/online_store.py reads it,
# for the step that writes the online store. Optional: a run with the SQLite online store needs none.
REDIS_SECRET = "homefeed-redis"
REDIS_ENV = {"password": "REDIS_PASSWORD"}
GPU = "nvidia.com/gpu"


def small(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return task.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")


def with_registry(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return kubernetes.use_secret_as_env(task, REGISTRY_SECRET, REGISTRY_ENV, optional=True)


def features_step(dataset, p: PipelineParams) -> dsl.PipelineTask:
    """The features step (Feast repository, materialized into `p.online_store`), with the Redis password."""
    task = c.features(dataset=dataset, half_life_days=p.half_life_days, online_store=p.online_store)
    return kubernetes.use_secret_as_env(
        small(task.set_display_name("features")), REDIS_SECRET, REDIS_ENV, optional=True
    )


def train(dataset, p: PipelineParams) -> dict[str, dsl.PipelineTask]:
    """features, ID pretraining, train retrieval, train ranking, evaluate."""
    features = features_step(dataset, p)
    ray = {"ray_backend": p.ray_backend, "ray_address": p.ray_address, "ray_workers": p.ray_workers,
           "job_id": dsl.PIPELINE_TASK_ID_PLACEHOLDER}  # fmt: skip
    split = {"holdout_days": p.holdout_days, "ranking_days": p.ranking_days}
    ids = c.pretrain_ids(dataset=dataset, epochs=p.id_pretrain_epochs, seed=p.seed, **split, **ray)
    ids.set_display_name("ID pretraining")
    retrieval = c.train_retrieval(
        dataset=dataset, pretrained_ids=ids.outputs["ids"], epochs=p.retrieval_epochs, seed=p.seed, **split, **ray
    ).set_display_name("train retrieval")
    ranking = c.train_ranking(
        dataset=dataset,
        retrieval_model=retrieval.outputs["model"],
        epochs=p.ranking_epochs,
        max_examples=p.ranking_max_examples,
        seed=p.seed,
        gpus=p.ranking_gpus,
        **split,
        **ray,
    ).set_display_name("train ranking")
    # With ray_backend=local the step trains in its own pod (GPUs from the task's accelerator limit); with kuberay it
    # stages data on the shared workspace volume for the RayJob's pods, which the step's pod mounts too.
    ranking.set_accelerator_type(GPU).set_accelerator_limit(p.ranking_gpus)
    for task in (ids, retrieval, ranking):
        task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
        kubernetes.mount_pvc(task, pvc_name=WORKSPACE_PVC, mount_path=WORKSPACE_MOUNT)
    evaluation = c.evaluate(
        dataset=dataset, retrieval_model=retrieval.outputs["model"], ranking_model=ranking.outputs["model"], **split
    )
    small(evaluation.set_display_name("evaluate"))
    return {"features": features, "retrieval": retrieval, "ranking": ranking, "evaluate": evaluation}


def gate(dataset, tasks: dict, p: PipelineParams) -> dsl.PipelineTask:
    gate_task = c.gate(
        dataset=dataset,
        evaluation=tasks["evaluate"].outputs["evaluation"],
        retrieval_model=tasks["retrieval"].outputs["model"],
        ranking_model=tasks["ranking"].outputs["model"],
        holdout_days=p.holdout_days,
        ranking_days=p.ranking_days,
        registry=p.registry,
        gate_policy=p.gate_policy,
        run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    return with_registry(small(gate_task.set_display_name("gate")))


def release(dataset, retrieval_model, ranking_model, evaluation, feature_store, decision, p: PipelineParams) -> None:
    """corpus + index, then deploy (verify, register, roll out, promote). Call inside the gate's condition."""
    index = c.index(
        dataset=dataset,
        retrieval_model=retrieval_model,
        half_life_days=p.half_life_days,
        hnsw_m=p.hnsw_m,
        hnsw_ef_construction=p.hnsw_ef_construction,
        index_uri=p.index_uri,
        ray_workers=p.ray_workers,
    )
    small(index.set_display_name("corpus + index"))
    kubernetes.use_secret_as_env(index, MILVUS_SECRET, MILVUS_ENV, optional=True)
    deploy = c.deploy(
        retrieval_model=retrieval_model,
        ranking_model=ranking_model,
        pin_index=index.outputs["pin_index"],
        evaluation=evaluation,
        feature_store=feature_store,
        decision=decision,
        registry=p.registry,
        target=p.deploy_target,
        run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    with_registry(small(deploy.set_display_name("deploy")))


def train_gate_release(dataset, p: PipelineParams) -> dict[str, dsl.PipelineTask]:
    """train → gate → (if it passes) corpus + index → deploy; returns the tasks that always run."""
    tasks = train(dataset, p)
    tasks["gate"] = gate(dataset, tasks, p)
    with dsl.If(tasks["gate"].outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
        release(
            dataset,
            tasks["retrieval"].outputs["model"],
            tasks["ranking"].outputs["model"],
            tasks["evaluate"].outputs["evaluation"],
            tasks["features"].outputs["feature_store"],
            tasks["gate"].outputs["decision"],
            p,
        )
    return tasks
