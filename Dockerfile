# responses-bridge as a container: `docker build -t responses-bridge .`, then e.g.
#   docker run -p 8080:8080 -v bridge-data:/data \
#     -e RESPONSES_BRIDGE_UPSTREAM=http://host.docker.internal:11434/v1 \
#     -e RESPONSES_BRIDGE_API_KEY=sk-choose-one responses-bridge
# Every flag has a RESPONSES_BRIDGE_* variable (docs/server.md); arguments after the image name are
# appended to `responses-bridge serve --host 0.0.0.0` (e.g. `--upstream fixtures` to try it out).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY translator ./translator
COPY server ./server
COPY fixtures ./fixtures
# A wheel first, so the runtime stage gets no source tree, no build tools and no pip cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bridge \
    && mkdir -p /data && chown bridge:bridge /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "responses-bridge[postgres]" && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    RESPONSES_BRIDGE_PORT=8080 \
    RESPONSES_BRIDGE_STORE=sqlite:////data/responses.db
VOLUME ["/data"]
WORKDIR /data
USER bridge
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RESPONSES_BRIDGE_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["responses-bridge", "serve", "--host", "0.0.0.0"]
