# Seed 001, "8. Signals": a semaphore lets at most 5 of 30 threads into the room at a time.
# The occupancy is counted in a shared Value (test lines) to check that it never exceeds 5.
from threading import Thread
from agora import Semaphore
from threading import current_thread
from agora import Value  # test
import random
import time

sem = Semaphore(5)
inside = Value('i', 0)  # test


def task():
    sem.acquire()
    n = inside.fetch_add(1) + 1  # test
    print(f'{current_thread().name} Room {n}', flush=True)
    time.sleep(random.randint(1, 3) / 100)
    inside.fetch_add(-1)  # test
    sem.release()


if __name__ == '__main__':
    for i in range(30):
        t = Thread(target=task, )
        t.start()
