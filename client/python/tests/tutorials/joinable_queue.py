# Seed 002, "JoinableQueue implementation producer consumer model source code". The consumers
# are daemons: the program ends once the producers' q.join() has returned, that is once every
# item has been marked done.
from agora import Process, JoinableQueue
import time


# Consumer approach
def consumer(q, name):
    while True:
        res = q.get()
        if res is None: break
        print("%s Ate %s" % (name, res), flush=True)
        q.task_done()  # Send a signal to q.join(): one value taken and processed


# Producer method
def producer(q, name, food):
    for i in range(3):
        time.sleep(1 / 100)  # Time delay of simulating watermelon production
        res = "%s %s" % (food, i)
        print("%s Produced %s" % (name, res), flush=True)
        # Put the produced vegetable in the queue
        q.put(res)
    q.join()  # Wait until the consumers have taken and processed everything put


if __name__ == "__main__":
    q = JoinableQueue()
    # Create producer
    p1 = Process(target=producer, args=(q, "kelly", "watermelon"))
    p2 = Process(target=producer, args=(q, "kelly2", "Blueberry"))
    # Create consumer
    c1 = Process(target=consumer, args=(q, "peter",))
    c2 = Process(target=consumer, args=(q, "peter2",))
    c3 = Process(target=consumer, args=(q, "peter3",))
    c1.daemon = True
    c2.daemon = True
    c3.daemon = True
    p_l = [p1, p2, c1, c2, c3]
    for p in p_l:
        p.start()
    p1.join()
    p2.join()
    print("Main process", flush=True)
