"""Enqueue tasks and wait for their results (start the worker app first).

conveyor serve --data-dir /tmp/conveyor-data &
conveyor worker tasks_app:worker &
python producer.py
"""

from __future__ import annotations

import sys

from tasks_app import fetch_report, make_thumbnail

from conveyor import Client, TaskFailed


def main(target: str = "127.0.0.1:7470") -> None:
    with Client(target) as client:
        task = client.enqueue("thumbnails.make", {"path": "a.png"}, queue="images", priority=7)
        print(task.id, client.get_task(task.id).state)
        print("result:", client.result(task.id, timeout=10))

        # Name the function instead of the kind string:
        report = fetch_report.enqueue({"name": "q3", "busy": True}, client=client)
        print("report:", client.result(report.id, timeout=30))

        tasks = client.enqueue_many(
            [("thumbnails.make", {"path": f"{i}.png"}) for i in range(100)], queue="images"
        )
        print("batch:", sum(client.result(t.id, timeout=30)["ok"] for t in tasks), "ok")

        bad = make_thumbnail.enqueue({}, client=client)
        try:
            client.result(bad.id, timeout=10)
        except TaskFailed as exc:
            print("failed as expected:", exc.error_type, exc.error_message)


if __name__ == "__main__":
    main(*sys.argv[1:])
