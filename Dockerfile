# ipipd in a container. The image runs the daemon by default and carries the test suite:
#
#   docker build -t ipipd .
#   docker run --privileged --rm -v /etc/ipipd:/etc/ipipd:ro --network host ipipd      # the daemon
#   docker run --privileged --rm ipipd npm test                                      # the tests
#
# --privileged (or --cap-add NET_ADMIN --cap-add NET_RAW --device /dev/net/tun, plus permission to
# create network namespaces for the tests) is needed: ipipd creates a TUN device and a raw socket.

# ---- build stage: the native addon (node-gyp, g++) and the TypeScript ----------------------------
FROM node:20-bookworm-slim AS build
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh build && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ipipd
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# node-gyp needs Node's headers. The official image ships them under /usr/local; where they are
# missing, Debian's libnode-dev gives Node-API headers (the addon uses only Node-API, whose ABI is
# stable across Node versions), so the build never downloads anything.
RUN if [ -f /usr/local/include/node/node_api.h ]; then nodedir=/usr/local; \
    else apt-get update && apt-get install -y --no-install-recommends libnode-dev && nodedir=/usr; fi \
 && npx node-gyp rebuild --nodedir="$nodedir" \
 && npm run build

# ---- runtime: node, and the `run` and `test` groups of scripts/install-deps.sh (the one list):
# iproute2 for the netns scripts and tests; tcpdump, tshark, scapy and ping for the capture and
# RFC 2003 conformance tests; iptables (and its arptables) for the AF_PACKET test -----------------
FROM node:20-bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh run test && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
WORKDIR /opt/ipipd
COPY --from=build /opt/ipipd /opt/ipipd
RUN ln -s /opt/ipipd/bin/ipipd.js /usr/local/bin/ipipd && mkdir -p /etc/ipipd
CMD ["ipipd", "run", "--config", "/etc/ipipd/ipipd.yaml"]
