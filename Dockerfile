# One image for both roles: `kanserve api` (gateway) and `kanserve worker` (training).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    OMP_WAIT_POLICY=PASSIVE

WORKDIR /app
# A C++ compiler for the layer op's CPU kernels (kanmodel/csrc), built at install time.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# Pinned CPU build first: an unpinned torch pulls a multi-GB CUDA build.
# (For the gpu queue build FROM an image with CUDA and install the matching torch wheel.)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml setup.py README.md alembic.ini ./
COPY kanmodel ./kanmodel
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# No build isolation: setup.py compiles kanmodel/csrc against the torch installed above.
RUN pip install 'setuptools>=68' wheel && pip install --no-build-isolation -e . \
    && useradd --create-home kanserve
USER kanserve

EXPOSE 8000
ENTRYPOINT ["kanserve"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
