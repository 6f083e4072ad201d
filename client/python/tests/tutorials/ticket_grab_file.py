# Seed 000, "Part2: Multiple processes sharing the same file", the locked version: a JSON file as
# the database, 100 clients grabbing tickets. The lock is agora's.
# The file db.txt holds {"count": N} (written by the test).
from agora import Process, Lock
import time, json, random


def search():
    dic = json.load(open('db.txt'))
    print('\033[43m remaining votes %s\033[0m' % dic['count'], flush=True)


def get():
    dic = json.load(open('db.txt'))
    time.sleep(0.1 / 100)  # network delay of reading the data
    if dic['count'] > 0:
        dic['count'] -= 1
        time.sleep(0.2 / 100)  # network delay of writing the data
        json.dump(dic, open('db.txt', 'w'))
        print('\033[43m ticket Success \033[0m', flush=True)


def task(lock):
    search()
    lock.acquire()
    get()
    lock.release()


if __name__ == '__main__':
    lock = Lock()
    for i in range(100):  # 100 clients grab tickets at once
        p = Process(target=task, args=(lock,))
        p.start()
