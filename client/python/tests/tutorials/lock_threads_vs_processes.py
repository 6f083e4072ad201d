# Seed 004, "Similarity and difference of multi thread vs. Multiprocess": the same worker in 5
# threads and in 5 processes, each printing under a lock. (No `if __name__ == '__main__'`, as in
# the tutorial: it relies on the fork start method.)
import os
import threading
import agora as multiprocessing


# worker function
def worker(sign, lock):
    lock.acquire()
    print(sign, os.getpid(), flush=True)
    lock.release()


# Main
print('Main:', os.getpid(), flush=True)

# Multi-thread
record = []
lock = threading.Lock()
for i in range(5):
    thread = threading.Thread(target=worker, args=('thread', lock))
    thread.start()
    record.append(thread)

for thread in record:
    thread.join()

# Multi-process
record = []
lock = multiprocessing.Lock()
for i in range(5):
    process = multiprocessing.Process(target=worker, args=('process', lock))
    process.start()
    record.append(process)

for process in record:
    process.join()
