"""Stage 2, a cache -> brain ages: the networks, their training and prediction, weight formats.

- :mod:`~agemapper.networks.models`: AgeMapper and SFCN (``build_model``).
- :mod:`~agemapper.networks.kernels`: the first convolution as one GEMM (an opt-in speed-up).
- :mod:`~agemapper.networks.batches`: batches from a cache to the device, and augmentation.
- :mod:`~agemapper.networks.training`: the replicate trainer's epoch loop (``train_replicates``),
  over :mod:`~agemapper.networks.settings` (the original's training settings),
  :mod:`~agemapper.networks.replicates` (independent replicates sharing the data; restarts),
  :mod:`~agemapper.networks.optim` (optimiser and scheduler tables),
  :mod:`~agemapper.networks.stopping` (early stopping, stuck detection),
  :mod:`~agemapper.networks.speed` (device and speed), :mod:`~agemapper.networks.checkpoint`
  (resume) and :mod:`~agemapper.networks.outputs` (model files, ``load_model``).
- :mod:`~agemapper.networks.predict`: replicate predictions and their mean (``predict``).
- :mod:`~agemapper.networks.serialization`: safetensors weights and checkpoints, never pickles.
- :mod:`~agemapper.networks.foreign`: PyTorch files of other code (state dicts, training
  checkpoints, whole-model pickles), read without running anything pickled.
- :mod:`~agemapper.networks.legacy`: the original AgeMapper's (and Peng et al.'s SFCN)
  parameter names, in and out.
- :mod:`~agemapper.networks.pretrained`: networks folders: a release imported with manifests,
  exported in the release's names, the statistics of training inputs they carry.

May import :mod:`agemapper.images`; never :mod:`agemapper.stats` or :mod:`agemapper.report`.
"""
