# zapgate: one image for every role, configured by environment variables only.
#
#   docker build -t zapgate .                                     (here: buildah bud, see deploy/test-image.sh)
#   docker run -p 8000:8000 -v zapgate-data:/data zapgate         serve: API + workers + embedded PostgreSQL
#   docker run -e DATABASE_URL=postgresql://… zapgate api         the API alone (many of these, behind a balancer)
#   docker run -e DATABASE_URL=postgresql://… zapgate worker      a worker hosting WHATSAPP_MAX_SESSIONS sessions
#
# Python is Debian's (3.11); every dependency installs from a wheel, so no compiler is ever needed; the virtual
# environment is built in a first stage and copied, without pip, into a second that has only what runs.

FROM debian:bookworm-slim AS python
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# the dependency list alone, out of pyproject.toml: the next stage installs them again only when it changes
FROM python AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /requirements.txt

FROM python AS build
WORKDIR /src
COPY --from=requirements /requirements.txt ./
# every dependency from a wheel into /opt/zapgate, and the build backend into a venv of its own (not shipped);
# behind a TLS-inspecting proxy, hand its CA bundle in: --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m venv /opt/zapgate && python3 -m venv /opt/build \
    && /opt/zapgate/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: -r requirements.txt \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check "hatchling>=1.25"
COPY pyproject.toml README.md ./
COPY src ./src
# zapgate itself: no download from here on
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation -w /wheels . \
    && /opt/zapgate/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-index /wheels/*.whl \
    && /opt/zapgate/bin/pip uninstall --yes --quiet setuptools pip \
    && find /opt/zapgate -name '*.dist-info' -prune -o -name tests -type d -path '*/site-packages/*/tests' -prune \
        -exec rm -rf {} +

FROM debian:bookworm-slim
# python3: the interpreter the venv links to; libmagic1: python-magic (neonize imports it); ca-certificates: TLS
# to WhatsApp and to webhooks; tini: PID 1 that forwards signals and reaps the embedded PostgreSQL's children
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libmagic1 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin zapgate \
    && mkdir -p /data /srv/zapgate && chown zapgate:zapgate /data
COPY --from=build /opt/zapgate /opt/zapgate
COPY deploy/healthcheck.py /opt/zapgate/healthcheck.py
ENV PATH=/opt/zapgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ZAPGATE_DATA_DIR=/data \
    ZAPGATE_HOST=0.0.0.0 \
    ZAPGATE_PORT=8000
USER zapgate
WORKDIR /srv/zapgate
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python3", "/opt/zapgate/healthcheck.py"]
ENTRYPOINT ["tini", "--", "zapgate"]
CMD ["serve"]
