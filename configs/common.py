"""Defaults every recipe shares: mesh, sharding rules, optimizer, checkpoints, logging.

A recipe config starts from `base_config()` and overrides what it needs; every key that a
recipe or the command line may set exists here, so a typo (`--config.batchsize=8`) is an
error rather than a silently ignored setting.
"""

import ml_collections

# Logical axis names used by the models (see CONTRIBUTING.md) -> mesh axes. FSDP shards
# the input side of every kernel over `fsdp`; tensor parallelism shards the output side
# over `tensor`. A dimension not divisible by its mesh axes stays replicated.
LOGICAL_AXIS_RULES = (
    ("activation_batch", ("data", "fsdp")),  # inputs' and activations' batch dimension
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_in", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("norm", None),
)


def optimizer_config(
    name="adam",
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    weight_decay=0.0,
    schedule="constant",
    warmup_steps=0,
    clip_norm=0.0,
):
    """One optimizer: an optax chain (clip -> optimizer) with a learning-rate schedule."""
    return ml_collections.ConfigDict(
        dict(
            name=name,  # adam | adamw | sgd | lion
            lr=lr,
            b1=b1,
            b2=b2,
            eps=1e-8,
            weight_decay=weight_decay,
            schedule=schedule,  # constant | cosine | linear
            warmup_steps=warmup_steps,
            decay_steps=0,  # 0: the run's total steps
            end_lr_factor=0.0,
            clip_norm=clip_norm,  # 0 disables global-norm clipping
            # Update the group's arrays as one vector (optax.flatten): a few large kernels
            # instead of several per array, so faster compiles for the many small arrays of
            # the CPU-sized `tiny` recipes; the state is one replicated vector, so not on a
            # mesh that shards params (fsdp or tensor > 1), and a run resumes only with the
            # setting it was saved with.
            flatten=False,
        )
    )


def base_config():
    c = ml_collections.ConfigDict()
    c.task = ""  # module name under jaxtalk/tasks/
    c.seed = 0
    c.total_steps = 1000
    c.batch_size = 8  # global batch, split over processes and devices
    c.grad_accum_steps = 1  # micro-batches per step (batch_size must divide)

    # Numerics: params are float32; compute in `dtype` where the task honours it.
    c.dtype = "float32"  # float32 | bfloat16
    c.remat_policy = "none"  # none | full | dots (rematerialise the loss functions)
    c.nan_policy = "skip"  # skip: drop the update and count it | stop: halt with a message

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    # Multi-slice: the DCN (between-slice) factor of each axis; all ones = one slice.
    c.dcn_mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))
    c.logical_axis_rules = LOGICAL_AXIS_RULES

    # Optimizers by parameter group; tasks name their groups (e.g. generator and
    # discriminator) and a group without an optimizer is frozen.
    c.optimizers = ml_collections.ConfigDict({"model": optimizer_config()})
    c.ema = ml_collections.ConfigDict()  # group -> decay, e.g. {"model": 0.999}
    # Regexes over 'group/path/to/param' whose params never change (e.g. a pretrained
    # encoder inside the generator group).
    c.frozen = ()
    # 'REGEX=FACTOR' entries over the same paths: that sub-tree's updates times FACTOR.
    c.lr_multipliers = ()

    # Checked at start (jaxtalk/train/train.py, _validate): every_steps 0 switches periodic
    # checkpoints, evaluation and samples off (never negative); log.every_steps, keep,
    # batch_size and grad_accum_steps are at least 1.
    c.checkpoint = ml_collections.ConfigDict(
        dict(
            every_steps=500,  # also saved at the end and when preempted (SIGTERM)
            keep=3,
            best_metric="",  # eval metric to keep the best of ("" disables)
            best_mode="max",
            keep_best=1,
            async_save=True,
        )
    )
    c.log = ml_collections.ConfigDict(
        dict(
            every_steps=50,
            tensorboard=True,
            progress_bar=True,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(every_steps=0, num_batches=4, split="test"))
    c.samples = ml_collections.ConfigDict(dict(every_steps=0, num=4))
    # A profiler trace of steps start_step .. start_step + num_steps - 1 under
    # <workdir>/profile (jaxtalk/train/profile.py); start_step 0: none. python: Python
    # function calls too (large traces: the data loader's threads).
    c.profile = ml_collections.ConfigDict(dict(start_step=0, num_steps=3, python=False))
    c.data = ml_collections.ConfigDict()  # the task's data settings (e.g. data_pipelines.loaders)
    c.device_prefetch = 2  # global batches assembled on device ahead of the step
    c.distributed = ml_collections.ConfigDict(
        dict(
            initialize="auto",  # auto: when the environment describes a cluster | yes | no
            coordinator_address="",
            num_processes=0,
            process_id=-1,
        )
    )
    return c


def flatten_optimizers(c):
    """Every group's optimizer updates its arrays as one vector (optimizer_config's
    `flatten`): what the CPU-sized `tiny` recipes do (README "Training": at the tests' -O0
    the tiny MegActor step compiles in 10.3 s instead of 13.4 s on 2 cores; its steps run at
    the same rate)."""
    for group in c.optimizers:
        c.optimizers[group].flatten = True


def tiny_diffusion(c, group: str, stage: str, image_size: int = 32):
    """The `tiny` settings the latent video diffusion families share (AniPortrait, MegActor):
    float32 pixel space at `image_size` on the embedded synthetic set, AdamW 1e-3 for the
    trained `group`, 10 DDIM steps, one evaluation and one checkpoint at the end."""
    c.dtype = "float32"
    c.data.mixture = ""
    c.data.data_dir = "data/synthetic"
    c.data.image_size = image_size
    c.data.samples_per_clip = 8  # the default synthetic test split has 4 clips: one eval batch
    c.optimizers[group].lr = 1e-3
    c.optimizers[group].warmup_steps = 50
    c.optimizers[group].weight_decay = 0.0
    flatten_optimizers(c)
    if stage == "stage1":
        # Evaluation and stage 2 read an EMA of the stage-1 weights (ours: the releases keep
        # none; a model trained for minutes samples better from its average).
        c.ema = ml_collections.ConfigDict({group: 0.99})
    c.diffusion.sample_steps = 10
    c.total_steps = 1500 if stage == "stage1" else 300
    c.log.every_steps = 50
    c.log.progress_bar = False
    c.eval.every_steps = c.total_steps
    c.eval.num_batches = 2
    c.samples.every_steps = 0
    c.checkpoint.every_steps = c.total_steps
