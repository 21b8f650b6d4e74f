# A custom SDK container for Dataflow's workers: the Beam SDK image of the pipeline
# environment's Beam and Python, with the pipeline's lock installed (hash-checked) and the
# project's code. Workers then start without installing anything, and need no internet access.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/pipeline:TAG . && docker push ...
#   python -m pipeline ... --runner DataflowRunner --sdk_container_image REGION-docker.pkg.dev/...
# Keep FROM equal to the locked apache-beam and the pipeline environment's Python
# (tests/test_dataflow.py checks it).
FROM apache/beam_python3.12_sdk:2.77.0

COPY requirements/pipeline.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY common common
COPY pipeline pipeline
COPY embedding embedding
COPY trainer trainer
RUN pip install --no-cache-dir --no-deps .
