# Seed 003, "强大的Manage" (the powerful Manager): a child fills a Manager dict and list.
from agora import Process, Manager


def func(dt, lt):
    for i in range(10):
        key = 'arg' + str(i)
        dt[key] = i * i

    lt += range(11, 16)


if __name__ == "__main__":
    manager = Manager()
    dt = manager.dict()
    lt = manager.list()

    p = Process(target=func, args=(dt, lt))
    p.start()
    p.join()
    print(dt, '\n', lt)
