# The common "manager queue with task_done and join" pattern: Python's manager Queue() is a
# queue.Queue, so workers mark each job done and the main program waits with q.join(). The
# workers are daemons: the program ends once every job put has been marked done.
import agora as multiprocessing  # was: import multiprocessing


def worker(q, results):
    while True:
        n = q.get()
        results.append(n * n)
        q.task_done()


if __name__ == "__main__":
    with multiprocessing.Manager() as manager:
        q = manager.Queue()
        results = manager.list()
        for n in range(20):
            q.put(n)
        workers = [
            multiprocessing.Process(target=worker, args=(q, results), daemon=True)
            for _ in range(3)
        ]
        for w in workers:
            w.start()
        q.join()
        print("squares:", sorted(results))  # test: every job done before join returned
