#!/bin/bash
# The compose broker: KRaft, one node, a SASL_SSL listener with SCRAM-SHA-512 only, and ACLs
# (StandardAuthorizer, nothing allowed that no ACL allows; the broker's own principal the one
# super user). As `flowpay dev up --secure` runs it locally (workers/devstack/secure.py).
# Its passwords come from kafka.env (`flowpay deploy credentials`); its certificates from /tls.
set -euo pipefail

: "${KAFKA_BROKER_PASSWORD:?kafka.env is missing: run flowpay deploy credentials}"
: "${KAFKA_SCRAM_USERS:?kafka.env is missing: run flowpay deploy credentials}"
CONFIG=/tmp/server.properties
CLIENT=/tmp/client.properties

umask 077
cat > "$CONFIG" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=SASL_SSL://:9094,CONTROLLER://localhost:9093
advertised.listeners=SASL_SSL://kafka:9094
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}" user_broker="${KAFKA_BROKER_PASSWORD}";
ssl.keystore.type=PEM
ssl.keystore.location=/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=/tls/ca.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:broker
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES

# What the health check logs in as.
cat > "$CLIENT" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=/tls/ca.pem
PROPERTIES

# SCRAM users are made when the storage is formatted (KIP-900), the first time only; a
# principal added later is added by `flowpay kafka acls apply`'s administrator with kafka-configs.
scram=(--add-scram "SCRAM-SHA-512=[name=broker,password=${KAFKA_BROKER_PASSWORD}]")
for user in ${KAFKA_SCRAM_USERS}; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%=*},password=${user#*=}]")
done
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "${CLUSTER_ID}" \
    --config "$CONFIG" "${scram[@]}" > /dev/null

exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
