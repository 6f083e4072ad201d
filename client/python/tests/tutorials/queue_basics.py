# Seed 000, "Three, queue queues", the Application example.
from agora import Process, Queue
import time

q = Queue(3)

# put, get, put_nowait, get_nowait, full, empty
q.put(3)
q.put(3)
q.put(3)
print(q.full())  # full
print(q.get())
print(q.get())
print(q.get())
print(q.empty())  # empty
