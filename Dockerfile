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
RUN pip install .

RUN useradd --create-home --uid 10001 fti && mkdir -p /data && chown fti /data
USER fti
VOLUME ["/data"]
ENTRYPOINT ["fti"]
CMD ["--help"]
