# Seed 000, "Part1: Multiple processes sharing the same print terminal", the locked version.
# Python 3: `args=(lock)` (not a tuple) became `args=(lock,)`.
from agora import Process, Lock
import os, time


def work(lock):
    lock.acquire()
    print('%s is running' % os.getpid(), flush=True)
    time.sleep(2 / 100)
    print('%s is done' % os.getpid(), flush=True)
    lock.release()


if __name__ == '__main__':
    lock = Lock()
    for i in range(3):
        p = Process(target=work, args=(lock,))
        p.start()
