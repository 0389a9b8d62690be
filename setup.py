from setuptools import find_packages, setup

setup(
    name="detection_pipeline",
    version="0.1.0",
    description="MMDetection training and detection as a sequential Dagster job queue",
    packages=find_packages(exclude=["detection_pipeline_tests*"]),
    package_data={
        "detection_pipeline": [
            "instance/dagster.yaml",
            "mmdet_runner/configs/*.py",
            "records/migrations/script.py.mako",
        ]
    },
    python_requires=">=3.10,<3.13",
    install_requires=[
        "dagster==1.13.*",
        "dagster-webserver==1.13.*",
        "dagster-graphql==1.13.*",
        "dagster-postgres==0.29.*",  # the release that goes with dagster 1.13
        "alembic>=1.13",
        # 2.1 connects postgresql:// URLs with psycopg 3; dagster-postgres brings psycopg2.
        "sqlalchemy>=2.0,<2.1",
        # Pinned exactly: any looser pin pulls a multi-GB CUDA build of torch.
        "torch==2.13.0",
        "mmengine==0.10.7",
        # No CPU wheel on PyPI: built from source, or taken from a local wheel folder
        # (PIP_FIND_LINKS); see README.md.
        "mmcv==2.1.0",
        "mmdet==3.3.0",
        "pycocotools",
        "rasterio>=1.4",  # GeoTIFF (and PNG/JPEG) read by window, with the georeference
        "sahi>=0.12",  # patch placement; mmdet's large-image merge imports it too
        "shapely>=2",  # ignore zones
        "pillow",
        "matplotlib",
        "pyyaml",
        "prometheus-client>=0.20",  # detection-pipeline metrics
        # mmengine imports pkg_resources at run time (setuptools 81 dropped it); torch 2.13
        # needs at least 77.0.3.
        "setuptools>=77.0.3,<81",
    ],
    extras_require={
        # playwright drives the OS's Chromium (apt: chromium); it downloads no browser here.
        "test": ["pytest>=8", "pytest-timeout", "playwright>=1.45"],
    },
    entry_points={"console_scripts": ["detection-pipeline=detection_pipeline.cli:main"]},
)
