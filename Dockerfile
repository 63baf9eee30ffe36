# Patchbay: the server (REST, /mcp, /metrics) with git, bubblewrap and the bundled OpenCode.
# Not built in Patchbay's CI (no Docker engine there): test/docker.test.ts checks what it can
# without one (paths copied exist, runtime imports are production dependencies, no root user).
FROM node:20-bookworm-slim

# git: clones, patches, publishing. bubblewrap: PATCHBAY_SANDBOX=bwrap. tini: signals reach
# Node (SIGTERM drains runs) and zombies of sandbox processes are reaped.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git bubblewrap ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so a source change does not reinstall them. postinstall runs
# scripts/unlink-node22.mjs; tsx (a production dependency) runs the TypeScript sources.
COPY package.json package-lock.json ./
COPY scripts/unlink-node22.mjs ./scripts/
RUN npm ci --omit=dev && npm cache clean --force

COPY bin ./bin
COPY src ./src
COPY client ./client

# An unprivileged user owns the data dir; nothing runs as root.
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin patchbay \
 && mkdir -p /data \
 && chown patchbay:patchbay /data
USER patchbay

ENV NODE_ENV=production \
    PATCHBAY_HOST=0.0.0.0 \
    PORT=8787 \
    PATCHBAY_DATA_DIR=/data
EXPOSE 8787
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8787)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["tini", "--", "node", "bin/patchbay.mjs"]
CMD ["serve"]
