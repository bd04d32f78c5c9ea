#!/usr/bin/env python3
"""The local SQS -> step driver: what Lambda's SQS event source mapping does, against moto.

Long-polls the step queue, hands each batch to the `step` function through `cargo lambda watch`
(its Lambda Invoke API) as an SQS event with the records exactly as Lambda shapes them, then deletes
the records the function did not name in `batchItemFailures`. Failed records stay in the queue and
come back when their visibility timeout lapses; delays (`DelaySeconds`) and the redrive policy to the
dead-letter queue are the queue's own (moto's SQS), as on AWS. A failed invocation (the function
errored or crashed) deletes nothing: the whole batch comes back, as with Lambda.

Usage: sqs-step-driver.py QUEUE_URL INVOKE_URL [--batch-size N]
  INVOKE_URL: http://127.0.0.1:9000 (the watch port)
Environment: AWS_ENDPOINT_URL (moto), AWS_REGION, AWS credentials, as the functions get them.
"""
import argparse
import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

import boto3


def log(**fields):
    print(json.dumps({"driver": "sqs-step", **fields}), flush=True)


def queue_arn(sqs, url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return attrs["QueueArn"]


def record(message, arn, region):
    """One record of an SQS event, as Lambda builds it from a received message."""
    body = message["Body"]
    attributes = {k: v for k, v in message.get("Attributes", {}).items()}
    message_attributes = {}
    for name, value in message.get("MessageAttributes", {}).items():
        message_attributes[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def invoke(invoke_url, event, timeout):
    request = urllib.request.Request(
        f"{invoke_url}/2015-03-31/functions/step/invocations",
        data=json.dumps(event).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = response.status
        payload = response.read()
        function_error = response.headers.get("X-Amz-Function-Error")
    return status, payload, function_error


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("queue_url")
    parser.add_argument("invoke_url")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--function-timeout", type=float, default=75.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    region = os.environ.get("AWS_REGION", "us-east-1")
    sqs = boto3.client("sqs", region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    arn = queue_arn(sqs, args.queue_url)
    log(event="started", queue=args.queue_url, invoke=args.invoke_url)
    while True:
        received = sqs.receive_message(
            QueueUrl=args.queue_url,
            MaxNumberOfMessages=args.batch_size,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            continue
        event = {"Records": [record(m, arn, region) for m in received]}
        try:
            status, payload, function_error = invoke(args.invoke_url, event, args.function_timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            # The whole batch comes back after its visibility timeout.
            log(event="invoke_failed", records=len(received), error=str(e))
            time.sleep(1)
            continue
        if status != 200 or function_error:
            log(event="function_error", records=len(received), status=status, body=payload[:300].decode(errors="replace"))
            continue
        try:
            response = json.loads(payload or b"{}")
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures") or []}
        except (ValueError, KeyError, TypeError) as e:
            # An unreadable response fails the whole batch, as Lambda treats it.
            log(event="bad_response", error=str(e), body=payload[:300].decode(errors="replace"))
            continue
        done = [m for m in received if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=args.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        log(event="batch", records=len(received), deleted=len(done), failed=sorted(failed))


if __name__ == "__main__":
    main()
