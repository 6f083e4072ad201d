# Seed 003, "Queue": two processes send lists back through a queue.
# Python 3: Python 2's range returned a list, hence list(range(a, b)).
from agora import Process, Queue, Lock

L = [1, 2, 3]


def add(q, lock, a, b):
    lock.acquire()  # lock to avoid unpredictable errors while writing
    L1 = list(range(a, b))
    lock.release()
    q.put(L1)
    print(L1, flush=True)


if __name__ == '__main__':
    q = Queue()
    lock = Lock()
    p1 = Process(target=add, args=(q, lock, 20, 30))
    p2 = Process(target=add, args=(q, lock, 30, 40))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
    L += q.get() + q.get()
    print(L)
