#!/bin/sh
# Renders /etc/geiger/node.toml for this pod (an init container). The
# downward API cannot show a pod its node's zone label, so labels.zone is
# GEIGER_ZONE when set, else "k8s": the spread over zones is enforced by the
# StatefulSet's topologySpreadConstraints, not by these labels.
set -eu
name=$(hostname)
ordinal=${name##*-}
id=$((ordinal + 1))
sed -e "s/@ID@/$id/" -e "s/@NAME@/$name/g" -e "s/@ZONE@/${GEIGER_ZONE:-k8s}/" \
  -e "s/@CLOUD@/${GEIGER_CLOUD:-k8s}/" -e "s/@REGION@/${GEIGER_REGION:-region}/" \
  /config/node.toml.template >/etc/geiger/node.toml
# The five voters bootstrap together: geiger-voter-0..4 through the
# headless Service (it publishes not-ready addresses, so they find each
# other before any is ready).
for i in 0 1 2 3 4; do
  peer="geiger-voter-$i.geiger-peers.geiger.svc.cluster.local"
  cat >>/etc/geiger/node.toml <<TOML

[[bootstrap]]
id = $((i + 1))
api_addr = "$peer:8080"
rpc_addr = "$peer:9080"
zone = "${GEIGER_ZONE:-k8s}"
cloud = "${GEIGER_CLOUD:-k8s}"
region = "${GEIGER_REGION:-region}"
TOML
done
