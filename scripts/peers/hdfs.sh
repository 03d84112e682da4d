# HDFS as a peer for scripts/bench-peers.sh (sourced, not run).
#
# Real daemons, one JVM each, on loopback: 1 NameNode + 3 DataNodes,
# dfs.replication=3, all stock hdfs-default.xml settings otherwise. Hadoop
# 3.5.0 jars from Maven Central (hadoop-client-minicluster, whose shaded jar
# carries the server classes and web apps), fetched once with mvn into
# ${XDG_CACHE_HOME:-~/.cache}/gfs/peers/hdfs, outside the clone. Only
# Hadoop's own main() classes are run; the project writes no Java.
#
# What reaches the disk: a DataNode writes block files through the page
# cache and does not fsync them, neither per packet nor when the block is
# closed (dfs.datanode.synconclose, default false; a client's hsync() is
# the only thing that syncs data). The NameNode fsyncs its edit log
# (FileChannel.force) before acknowledging each namespace change
# (dfs.namenode.edits.noeditlogchannelflush, default false). Not used here:
# MiniDFSCluster (MiniHadoopClusterManager), which also works but skips the
# edit log fsync (skipFsyncForTesting) and runs all nodes in one JVM.
#
# Defines install_hdfs and start_hdfs DIR; start_hdfs appends the JVM pids
# to the caller's array `pids` and sets hdfs_rpc and hdfs_http (NameNode
# RPC and HTTP/WebHDFS host:port). WebHDFS redirects reads and writes to a
# DataNode at 127.0.0.1 (dfs.datanode.hostname) on its HTTP port.

HDFS_VERSION=3.5.0
hdfs_home="${XDG_CACHE_HOME:-$HOME/.cache}/gfs/peers/hdfs"
hdfs_lib="$hdfs_home/hadoop-$HDFS_VERSION"

_hdfs_log() {
  if declare -F log >/dev/null; then log "$@"; else printf '[hdfs] %s\n' "$*" >&2; fi
}

install_hdfs() {
  [ -f "$hdfs_lib/.complete" ] && return 0
  local t
  for t in java mvn python3 curl; do
    command -v "$t" >/dev/null || { echo "$t is needed for HDFS" >&2; return 1; }
  done
  _hdfs_log "fetching Hadoop $HDFS_VERSION jars from Maven Central (once)"
  mkdir -p "$hdfs_home"
  cat >"$hdfs_home/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>gfs.peers</groupId><artifactId>hdfs-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-client-minicluster</artifactId><version>$HDFS_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$hdfs_lib.tmp"
  # A private local repository, removed afterwards: the jars are copied out.
  mvn -B -q -Dstyle.color=never -f "$hdfs_home/pom.xml" -Dmaven.repo.local="$hdfs_home/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$hdfs_lib.tmp" >&2
  touch "$hdfs_lib.tmp/.complete"
  rm -rf "$hdfs_lib"
  mv "$hdfs_lib.tmp" "$hdfs_lib"
  rm -rf "$hdfs_home/m2"
}

# Two free loopback ports, held open together so they differ.
_hdfs_free_ports() {
  python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))'
}

_hdfs_site() { # FILE NAME=VALUE...
  local f="$1" kv; shift
  {
    echo '<?xml version="1.0"?>'
    echo '<configuration>'
    for kv in "$@"; do
      printf '  <property><name>%s</name><value>%s</value></property>\n' "${kv%%=*}" "${kv#*=}"
    done
    echo '</configuration>'
  } >"$f"
}

# start_hdfs DIR: 1 NameNode + 3 DataNodes under DIR/hdfs, logs in DIR/hdfs.log.
start_hdfs() {
  local d="$1" rpc http i
  local h="$d/hdfs" logf="$d/hdfs.log"
  read -r rpc http < <(_hdfs_free_ports)
  hdfs_rpc="127.0.0.1:$rpc"
  hdfs_http="127.0.0.1:$http"
  mkdir -p "$h/conf" "$h/tmp"
  _hdfs_site "$h/conf/core-site.xml" \
    "fs.defaultFS=hdfs://$hdfs_rpc" \
    "hadoop.tmp.dir=$h/tmp"
  _hdfs_site "$h/conf/hdfs-site.xml" \
    "dfs.replication=3" \
    "dfs.namenode.name.dir=$h/name" \
    "dfs.namenode.rpc-address=$hdfs_rpc" \
    "dfs.namenode.http-address=$hdfs_http" \
    "dfs.namenode.secondary.http-address=127.0.0.1:0" \
    "dfs.namenode.datanode.registration.ip-hostname-check=false" \
    "dfs.datanode.hostname=127.0.0.1" \
    "dfs.datanode.address=127.0.0.1:0" \
    "dfs.datanode.http.address=127.0.0.1:0" \
    "dfs.datanode.ipc.address=127.0.0.1:0"
  # 256 MiB of heap per JVM (1 GiB in all). Per-operation INFO lines are off:
  # the audit log (Hadoop's log4j.properties sends it to a NullAppender), and
  # also DataNode client trace and NameNode block state changes.
  # java.io.tmpdir: Jetty unpacks the web apps there.
  local java=(java -Xmx256m -Djava.net.preferIPv4Stack=true -Djava.io.tmpdir="$h/tmp"
    -Dorg.slf4j.simpleLogger.showDateTime=true
    -Dorg.slf4j.simpleLogger.log.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=warn
    -Dorg.slf4j.simpleLogger.log.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=warn
    -Dorg.slf4j.simpleLogger.log.BlockStateChange=warn
    -cp "$h/conf:$hdfs_lib/*")
  if ! "${java[@]}" org.apache.hadoop.hdfs.server.namenode.NameNode -format -force -nonInteractive \
      > >(sed -u 's/^/[format] /' >>"$logf") 2>&1; then
    echo "HDFS NameNode format failed; $logf ends with:" >&2
    tail -n 20 "$logf" >&2
    return 1
  fi
  "${java[@]}" org.apache.hadoop.hdfs.server.namenode.NameNode \
    > >(sed -u 's/^/[nn] /' >>"$logf") 2>&1 &
  pids+=($!)
  for i in 0 1 2; do
    "${java[@]}" org.apache.hadoop.hdfs.server.datanode.DataNode \
      -D "dfs.datanode.data.dir=$h/dn$i" \
      > >(sed -u "s/^/[dn$i] /" >>"$logf") 2>&1 &
    pids+=($!)
  done
  local url="http://$hdfs_http/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
  local mine=("${pids[@]: -4}") p
  for _ in $(seq 1 1200); do
    for p in "${mine[@]}"; do
      kill -0 "$p" 2>/dev/null && continue
      echo "an HDFS daemon (pid $p) exited; $logf ends with:" >&2
      tail -n 20 "$logf" >&2
      return 1
    done
    if curl -sf "$url" 2>/dev/null | python3 -c '
import json, sys
b = json.load(sys.stdin)["beans"]
sys.exit(0 if b and b[0]["NumLiveDataNodes"] == 3 and b[0]["FSState"] == "Operational" else 1)' 2>/dev/null; then
      _hdfs_log "HDFS up: rpc $hdfs_rpc, http $hdfs_http, 3 live DataNodes"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out (120 s) waiting for HDFS with 3 live DataNodes; $logf ends with:" >&2
  tail -n 20 "$logf" >&2
  return 1
}
