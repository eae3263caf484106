"""A toy function that exercises what the local Lambda runtime must provide."""

import json
import os
import subprocess
import time

import boto3
from toy_common import GREETING

sfn = boto3.client("stepfunctions")


class ToyError(Exception):
    pass


def lambda_handler(event, context):
    print(json.dumps({"function": context.function_name, "keys": sorted(event)}))
    if "Records" in event:  # S3 notification: start the state machine once per object
        key = event["Records"][0]["s3"]["object"]["key"]
        sfn.start_execution(
            stateMachineArn=os.environ["STATE_MACHINE_ARN"],
            name=key.replace("%2F", "-").replace("/", "-").replace(".", "-"),
            input=json.dumps({"key": key}),
        )
        return {"started": key}
    if "httpMethod" in event:
        query = event.get("queryStringParameters") or {}
        if "respond_bytes" in query:  # an answer of that size, to cross Lambda's response limit
            return {"statusCode": 200, "body": "A" * int(query["respond_bytes"])}
        body = {"isBase64Encoded": event["isBase64Encoded"], "length": len(event["body"] or "")}
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body),
        }
    if event.get("spawn"):  # a grandchild of the cloud, as a handler's helper process would be
        child = subprocess.Popen(["sleep", str(event["spawn"])])
        return {"child_pid": child.pid}
    if event.get("emf"):  # an embedded-metric-format line, as Powertools Metrics prints it
        print(
            json.dumps(
                {
                    "_aws": {
                        "Timestamp": int(time.time() * 1000),
                        "CloudWatchMetrics": [
                            {
                                "Namespace": "Toy",
                                "Dimensions": [["service"]],
                                "Metrics": [{"Name": "Answers", "Unit": "Count"}],
                            }
                        ],
                    },
                    "service": "toy",
                    "Answers": [1.0, 1.0],
                }
            )
        )
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise ToyError(f"asked to fail ({GREETING})")
    return {
        "greeting": GREETING,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "setting": os.environ["SETTING"],
    }


def scheduled_handler(event, context):
    """A scheduled monitoring function: records the event it got in its log."""
    print(json.dumps({"function": context.function_name, "scheduled_event": event}))
    return {"checked": True}
