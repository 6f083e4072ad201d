import agora


def work(scores, lock, i):
    with lock:
        scores["total"] = scores.get("total", 0) + i


if __name__ == "__main__":
    with agora.Manager() as manager:          # starts agora-manager, stops it at the end
        scores = manager.dict()
        lock = manager.Lock()
        workers = [agora.Process(target=work, args=(scores, lock, i)) for i in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print(scores["total"])                # 28
