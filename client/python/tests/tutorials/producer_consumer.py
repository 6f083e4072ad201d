# Seed 000, "several producers will need to send a few end signals": three producers, one None
# per producer as the end signal. (The tutorial makes a second consumer, c2, but never starts it.)
from agora import Process, Queue
import time, random, os


def consumer(q):
    while True:
        res = q.get()
        if res is None: break  # end signal received
        time.sleep(random.randint(1, 3) / 100)
        print('\033[45m%s eat %s\033[0m' % (os.getpid(), res), flush=True)


def producer(name, q):
    for i in range(10):
        time.sleep(random.randint(1, 3) / 100)
        res = '%s%s' % (name, i)
        q.put(res)
        print('\033[44m%s produced %s\033[0m' % (os.getpid(), res), flush=True)


if __name__ == '__main__':
    q = Queue()
    # producers: the chefs
    p1 = Process(target=producer, args=('bun', q))
    p2 = Process(target=producer, args=('bones', q))
    p3 = Process(target=producer, args=('swill', q))
    # consumers: the foodies
    c1 = Process(target=consumer, args=(q,))
    c2 = Process(target=consumer, args=(q,))
    # start
    p1.start()
    p2.start()
    p3.start()
    c1.start()
    p1.join()  # the producers must all be done before the end signals are sent
    p2.join()
    p3.join()
    q.put(None)  # as many end signals as producers
    q.put(None)
    q.put(None)
    print('master')
