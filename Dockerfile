# One image for every FTI process; docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FTI_DATA_DIR=/data FTI_DEFINITIONS_PATH=/app/examples/fraud/features.yaml

# LightGBM needs OpenMP at run time.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto proto
COPY fti_core fti_core
COPY featurestore featurestore
COPY fti_cli fti_cli
COPY fti_demo fti_demo
COPY feature_stream feature_stream
COPY trainer trainer
COPY inference_grpc inference_grpc
COPY registry registry
COPY examples examples
COPY scripts/build_native.py scripts/build_native.py
RUN pip install .
# The feature worker's hot path compiled with mypyc (fti_core/native.py) in this source tree and
# installed over the interpreted copy; the compiler and mypy leave again within this layer.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install "mypy==2.4.1" types-protobuf types-PyYAML types-tqdm \
    && python scripts/build_native.py \
    && pip install --no-deps --force-reinstall . \
    && pip uninstall -y mypy types-protobuf types-PyYAML types-tqdm \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* build \
    && python -c "from fti_core import native; s = native.status(); print('hot path:', s); assert s.startswith('compiled')"

RUN useradd --create-home --uid 10001 fti && mkdir -p /data && chown fti /data
USER fti
VOLUME ["/data"]
ENTRYPOINT ["fti"]
CMD ["--help"]
