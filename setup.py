"""prpo-openrlhf: Process Relative Policy Optimization on top of OpenRLHF 0.11.2."""
from setuptools import find_packages, setup

setup(
    name="prpo_openrlhf",
    version="0.1.0",
    description="PRPO (process reward + group-relative outcome advantages) for OpenRLHF 0.11.2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The embedded policy and learned PRM shipped in the package (docs/local.md, "The embedded default"); also in
    # MANIFEST.in. Its directory has no __init__.py, so it is named here: setuptools would otherwise
    # warn that a directory of package data is importable but not listed.
    packages=find_packages(include=["prpo_openrlhf", "prpo_openrlhf.*"]) + ["prpo_openrlhf.local.shipped"],
    include_package_data=True,
    package_data={"prpo_openrlhf.local.shipped": ["*/*"]},
    # The CPU environment pins everything in requirements/constraints-cpu.txt and installs
    # OpenRLHF/vLLM specially (scripts/setup_cpu_env.sh), so the base list stays minimal.
    install_requires=["torch", "transformers", "math-verify[antlr4_13_2]", "tqdm", "requests"],
    extras_require={
        # GPU clusters: the normal CUDA wheels, the vLLM version OpenRLHF 0.11.2 pins.
        "gpu": ["openrlhf[vllm]==0.11.2", "vllm==0.29.0", "torch==2.13.0"],
        "plots": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "prpo-eval=prpo_openrlhf.cli.evaluate:main",
            "prpo-serve-prm=prpo_openrlhf.cli.serve_prm:main",
            "prpo-local=prpo_openrlhf.local.__main__:main",
        ],
        # Loaded by vLLM in every process (engine core and workers); see rollout/vllm_entropy.py and
        # vllm_lifeline.py.
        "vllm.general_plugins": [
            "prpo_entropy=prpo_openrlhf.rollout.vllm_entropy:register",
            "prpo_lifeline=prpo_openrlhf.vllm_lifeline:register",
        ],
    },
)
