# Seed 001, "Simulated double eleven queue to snap up millet mobile phones": 100 users, only
# the first 10 get in. The test lines wait for every user before the ranking is read, as the
# tutorial means ("only 10 people are allowed to buy"): read while users still arrive, the
# queue would make room for more.
import os
from agora import Queue
from agora import Process


def task(q):
    try:
        q.put(f'{os.getpid()}', block=False)
    except Exception:
        return


if __name__ == '__main__':
    q = Queue(10)
    users = []  # test
    for i in range(100):
        p = Process(target=task, args=(q,))
        p.start()
        users.append(p)  # test
    for p in users:  # test: every user has tried
        p.join()  # test
    print('queued:', q.qsize(), flush=True)  # test
    for i in range(1, 10):
        print(f'No. {i} Users are {q.get()}', flush=True)
    print('still queued:', q.qsize())  # test
