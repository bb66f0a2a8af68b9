# The screening job (`lawclf screen run`, once per container start): the serving stack plus the
# collector (requests, SQLAlchemy, psycopg), still no torch. Build from the repository root:
#   docker build -f deploy/screen.Dockerfile -t lawclf-screen .
# Run by a scheduler, never as a daemon: deploy/docker-compose.yml (service `screen`),
# deploy/screen/ (cron, systemd timer), deploy/k8s/screen-cronjob.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY deploy/requirements-screen.txt deploy/requirements-screen.txt
RUN pip install -r deploy/requirements-screen.txt
COPY pyproject.toml README.md ./
COPY lib ./lib
RUN pip install ".[screen]" -c deploy/requirements-screen.txt \
    && pip check \
    && ! python -c "import torch" 2>/dev/null

RUN groupadd --system --gid 10001 lawclf \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lawclf
USER 10001:10001

ENV LAWCLF_SCREEN_MODEL_DIR=/models \
    LAWCLF_SCREEN_OUT_DIR=/data/digests \
    LAWCLF_SCREEN_DB_URL=sqlite:////data/screen.db
ENTRYPOINT ["lawclf"]
CMD ["screen", "run"]
