"""Backbone presets by input shape (plain data, no torch: the CLI lists them without importing torch)."""

# Presets by input shape. Widths double as resolution halves; every block is binary.
PRESETS: dict[str, dict] = {
    # Fashion-MNIST / MNIST: 28x28 -> 14 -> 7 -> 4.
    "fmnist": dict(input_shape=(28, 28, 1), stem_channels=32, stem_stride=1,
                   stages=((32, 2, 2), (64, 2, 2), (128, 2, 2))),
    # CIFAR-10: 32x32 -> 16 -> 8 -> 4, last stage 4x4x512 as in work B's latent-replay layer.
    "cifar10": dict(input_shape=(32, 32, 3), stem_channels=64, stem_stride=1,
                    stages=((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))),
    # CORe50 128x128: stem to 64x64, then 32 -> 16 -> 8 -> 4.
    "core50": dict(input_shape=(128, 128, 3), stem_channels=32, stem_stride=2,
                   stages=((64, 2, 2), (128, 2, 2), (256, 2, 2), (512, 2, 2))),
}
