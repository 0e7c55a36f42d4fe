"""Build the off-site backup set of the dr_rebuild scenario on the controller and upload it to the scenario's S3.

The system that is lost: a PostgreSQL 15 cluster on the controller (sandbox.services.PostgresCluster, private
socket, removed at the end) with database shop (table orders, rows and an index), release v1 of the demo app
(sandbox.services.layout_release) and the configuration directory (CONFIG_FILES). Uploaded to the bucket, each
with an S3 SHA-256 checksum and a .sha256 sidecar (sandbox.archives.put_with_sidecar):
  db/shop-<UTC time of the dump>.dump    pg_dump -Fc of shop
  artifacts/shop/v1.tar.gz               tarball of the release directory
  config/shop-<UTC time>.tar.gz          tarball of the configuration directory
Prints one JSON document: the keys, the time of the dump (the recovery point), and the source's rows of orders
("count:md5", with the checksum SQL given as argument), for verify.yml to compare with the rebuilt system.

Usage: offsite_backup_set.py ENDPOINT_URL BUCKET WORK_DIR ROWS CHECKSUM_SQL  (PYTHONPATH=<project>/extensions)
"""

import datetime
import json
import os
import subprocess
import sys

import boto3

from sandbox import archives, services

FLAGS = {"flags": {"checkout-v2": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}}}
CONFIG_FILES = {
    "app.ini": b"[app]\nname = shop\nworkers = 4\n",
    "flags.json": json.dumps(FLAGS, indent=2).encode() + b"\n",
}


def main(endpoint_url, bucket, work_dir, rows, checksum_sql):
    os.makedirs(work_dir, exist_ok=True)
    os.chmod(work_dir, 0o755)
    cluster = services.PostgresCluster(work_dir, name="source")
    cluster.prepare()
    cluster.start()
    try:
        cluster.psql("CREATE DATABASE shop")
        cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2)); "
                     "INSERT INTO orders SELECT g, 'c' || (g %% 37), round((g * 1.37)::numeric, 2) "
                     "FROM generate_series(1, %d) g; CREATE INDEX ON orders (customer);" % rows, db="shop")
        when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        dump = os.path.join(work_dir, "shop.dump")
        subprocess.run([os.path.join(cluster.bin_dir, "pg_dump"), "-Fc", "-h", cluster.socket_dir,
                        "-p", str(cluster.port), "-U", "postgres", "-f", dump, "shop"], check=True, timeout=120)
        orders = cluster.psql(checksum_sql, db="shop")
    finally:
        cluster.stop()

    release_dir = services.layout_release(os.path.join(work_dir, "releases"), "v1")
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    keys = {"database": "db/shop-%s.dump" % stamp, "release": "artifacts/shop/v1.tar.gz",
            "config": "config/shop-%s.tar.gz" % stamp}
    with open(dump, "rb") as fh:
        bodies = {"database": fh.read(),
                  "release": archives.tar_gz(archives.tree(release_dir)),
                  "config": archives.tar_gz(CONFIG_FILES)}

    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    for name, key in keys.items():
        archives.put_with_sidecar(s3, bucket, key, bodies[name])

    print(json.dumps({
        "objects": keys,
        "dump_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "orders": orders,
        "release_files": {k: v.decode() for k, v in archives.tree(release_dir).items()},
        "config_files": {k: v.decode() for k, v in CONFIG_FILES.items()},
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
