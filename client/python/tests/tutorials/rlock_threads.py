# Seed 001, "7. Deadlock Phenomenon and Recursive Lock", the recursive lock version: two names
# for one RLock, so the A-then-B / B-then-A orders cannot deadlock.
from threading import Thread
from agora import RLock
import time

lock_A = lock_B = RLock()


class MyThread(Thread):
    def run(self):
        self.f1()
        self.f2()

    def f1(self):
        lock_A.acquire()
        print(f'{self.name} Get it A', flush=True)
        lock_B.acquire()
        print(f'{self.name} Get it B', flush=True)
        lock_B.release()
        lock_A.release()

    def f2(self):
        lock_B.acquire()
        print(f'{self.name} Get it B', flush=True)
        lock_A.acquire()
        print(f'{self.name} Get it A', flush=True)
        time.sleep(1 / 100)
        lock_A.release()
        lock_B.release()


if __name__ == '__main__':
    for i in range(3):
        t = MyThread()
        t.start()
