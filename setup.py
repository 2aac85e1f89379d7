"""Install script for wpl_keras."""

from setuptools import find_packages, setup

RUNTIME = [
    "tensorflow>=2.16",
    "keras>=3.0",
    "tensorflow-datasets>=4.9",
    # tensorflow-datasets' dataset builder imports it when it prepares a download, but does
    # not declare it (tests/data/test_downloads.py drives that path up to the network).
    "importlib_resources>=5",
    "keras-tuner>=1.4",
    "numpy>=1.23",
    "matplotlib>=3.6",
    # Decodes the CIFAR-10 image folders / JPEG archives.
    "pillow>=9",
    # keras-tuner's worker imports tensorboard's hparams plugin at trial time.
    "tensorboard>=2.16",
]

TEST = [
    "pytest>=7",
    "pytest-timeout>=2",
    "nbclient>=0.7",
    "nbformat>=5",
    "ipykernel>=6",
]

setup(
    name="wpl_keras",
    version="0.1.0",
    description=(
        "Weight Plasticity Loss for Keras: overcoming multi-model forgetting "
        "in weight-sharing training and neural architecture search."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["wpl_keras", "wpl_keras.*", "apps", "apps.*"]),
    package_data={"wpl_keras.experiments": ["paper_presets.json"]},
    python_requires=">=3.9",
    install_requires=RUNTIME,
    extras_require={"test": TEST},
    entry_points={
        "console_scripts": [
            "wpl-two-models=apps.two_models:main",
            "wpl-enas-search=apps.enas_search:main",
            "wpl-nao-search=apps.nao_search:main",
        ]
    },
)
