# Seed 000's ticket grab with the database in a shared dict instead of a JSON file: json.load
# became db.copy() and json.dump became db.update(dic); everything else is the tutorial's.
# The number of tickets is the first argument (default 10).
from agora import Process, Lock, Manager
import sys, time, random


def search(db):
    dic = db.copy()
    print('\033[43m remaining votes %s\033[0m' % dic['count'], flush=True)


def get(db):
    dic = db.copy()
    time.sleep(0.1 / 100)  # network delay of reading the data
    if dic['count'] > 0:
        dic['count'] -= 1
        time.sleep(0.2 / 100)  # network delay of writing the data
        db.update(dic)
        print('\033[43m ticket Success \033[0m', flush=True)


def task(lock, db):
    search(db)
    lock.acquire()
    get(db)
    lock.release()


if __name__ == '__main__':
    manager = Manager()
    db = manager.dict({'count': int(sys.argv[1]) if len(sys.argv) > 1 else 10})
    lock = Lock()
    clients = []  # test: kept to join them before reading the result
    for i in range(100):  # 100 clients grab tickets at once
        p = Process(target=task, args=(lock, db))
        p.start()
        clients.append(p)  # test
    for p in clients:  # test
        p.join()  # test
    print('left:', db['count'])  # test
