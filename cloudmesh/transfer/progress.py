"""Progress reporting: silent by default; a tqdm bar on stderr for a person at a terminal."""
import threading


class Progress:
    """Receives the totals as objects are planned (a page at a time), then each part's bytes and
    each finished object."""

    def start(self) -> None:
        pass

    def grow(self, nbytes: int, nobjects: int) -> None:
        pass

    def update(self, nbytes: int, nobjects: int) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalProgress(Progress):
    """Bytes done of the total planned so far, with rate and ETA, and objects done, on one stderr line."""

    def start(self) -> None:
        from tqdm import tqdm
        self.lock = threading.Lock()
        self.objects, self.total_objects = 0, 0
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
                        desc=self.label(), mininterval=0.2)

    def label(self) -> str:
        return f"{self.objects}/{self.total_objects} objects"

    def grow(self, nbytes: int, nobjects: int) -> None:
        with self.lock:
            self.total_objects += nobjects
            self.bar.total += nbytes
            self.bar.set_description_str(self.label(), refresh=False)

    def update(self, nbytes: int, nobjects: int) -> None:
        with self.lock:
            if nobjects:
                self.objects += nobjects
                self.bar.set_description_str(self.label(), refresh=False)
            self.bar.update(nbytes)

    def close(self) -> None:
        if hasattr(self, "bar"):
            self.bar.close()
