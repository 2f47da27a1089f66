// The app's own storage: one IndexedDB object store of named values. The device credential lives here (never
// in a URL, never in localStorage where any script of the origin reads it synchronously), with the last place
// and inbox seen, so the offline shell still shows them.

const DB = "placecast";
const STORE = "kv";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

let db = null;

async function run(mode, action) {
  db = db || (await open());
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const get = (key) => run("readonly", (store) => store.get(key));
export const set = (key, value) => run("readwrite", (store) => store.put(value, key));
export const remove = (key) => run("readwrite", (store) => store.delete(key));
export const clear = () => run("readwrite", (store) => store.clear());
