"""Counts archived messages per person straight from an S3 bucket with DuckDB (httpfs).

Usage: duckdb_count.py ENDPOINT BUCKET TENANT  ->  prints {"person": count, ...} as JSON.
"""
import glob
import json
import os
import sys

import duckdb
import duckdb_extension_httpfs

endpoint, bucket, tenant = sys.argv[1:4]
extension = glob.glob(os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", "*", "httpfs.duckdb_extension"))[0]
con = duckdb.connect()
con.execute(f"LOAD '{extension}'")
host = endpoint.removeprefix("http://")
con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
rows = con.execute(
    f"""SELECT "from".person AS person, count(*) AS messages
        FROM read_json_auto('s3://{bucket}/tenant={tenant}/date=*/hour=*/writer=*/*.jsonl.zst', hive_partitioning = true)
        WHERE type = 'message'
        GROUP BY person ORDER BY person"""
).fetchall()
print(json.dumps({person: count for person, count in rows}))
