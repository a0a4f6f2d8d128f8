/* reelway streams: readable, writable, duplex and transform streams with
 * backpressure, Node.js semantics, on libuv; pipe and pipeline; and the
 * adapters every body flows through (sockets, files, chunked, NDJSON, limit,
 * SHA-256, gzip).
 *
 * Reading guide
 * -------------
 * 1. Chunks (rw_buf_t, rw_chunk_t): reference-counted bytes, sliced without
 *    copying. In object mode a chunk carries a `void *obj` instead.
 * 2. One handle type, rw_stream_t, for every kind of stream. A stream has a
 *    readable half, a writable half, or both (duplex, transform). The code that
 *    *implements* a stream supplies an rw_stream_impl_t (read / write / final /
 *    destroy / free_obj) and calls the producer functions (rw_readable_push,
 *    rw_readable_end, rw_writable_write_done, ...). The code that *consumes* a
 *    stream uses the consumer functions (rw_readable_resume, rw_readable_read,
 *    rw_writable_write, rw_writable_end) and may listen to its events
 *    (rw_stream_events_t), or hands it to rw_pipeline_start.
 * 3. Lifecycle, as libuv handles: the caller allocates the handle (usually
 *    embedded in its own struct), rw_*_init, use, end or rw_stream_destroy,
 *    then rw_stream_close(s, close_cb) exactly once; the memory may be reused
 *    only in or after close_cb. If a call that takes a callback fails, the
 *    callback is never called.
 * 4. Threads: everything here runs on the thread of the stream's loop, and no
 *    function blocks. Work that blocks (file I/O, a database cursor) goes to the
 *    libuv threadpool and pushes its results from the loop thread.
 *
 * Deferred events
 * ---------------
 * Node defers some events with process.nextTick so that a callback never runs
 * inside the call that caused it (drain after a synchronous write, end, finish,
 * error, close, resume). reelway does the same through ONE scheduler per loop:
 * a uv_idle_t created lazily by the first stream initialised on that loop,
 * plus an intrusive list threaded through the streams that have work pending.
 * So a stream owns no libuv handle and allocates nothing while idle; an idle
 * stream costs sizeof(rw_stream_t) and nothing else, and 10,000 idle response
 * writables cost 10,000 * sizeof(rw_stream_t). The idle handle is active only
 * while some stream has deferred work, so it never keeps a loop alive on its
 * own; the price is that the loop owner calls rw_stream_loop_close(loop)
 * before uv_loop_close (see there). A per-stream uv_idle_t/uv_async_t would
 * have cost ~130 bytes and a uv_close per stream; a global registry of loops
 * (one mutex-protected lookup per rw_*_init, cached per thread) is the cost of
 * this design.
 *
 * Buffers and memory
 * ------------------
 * A readable buffers pushed chunks while nobody consumes them; a writable
 * buffers written chunks while its implementation is busy. Both count in bytes
 * (byte mode) or items (object mode) against a high-water mark (HWM): push and
 * write still accept data above it but return false, which is the signal to
 * stop. A stage that honours the signal holds at most HWM + one chunk per half.
 * The queue of a stream is a ring allocated on first use and freed as soon as
 * it is empty again, so a stream that is idle holds no allocation.
 * sizeof(rw_stream_t) is 176 bytes on x86-64.
 *
 * Recipes
 * -------
 * A body fed by its owner (the HTTP server's request body): embed an
 * rw_stream_t in the connection, rw_readable_init it with an impl whose read
 * calls uv_read_start on the socket (read may be called again while reading:
 * keep it idempotent). In the llhttp body callback, push a slice of the read
 * buffer (allocate it with rw_buf_new in the uv_alloc_cb and find it again
 * with rw_buf_from_base: no copy, no allocation beyond the buffer); when push
 * returns false, uv_read_stop. At message end rw_readable_end; on a limit or
 * a disconnect rw_stream_destroy(s, RW_ELIMIT / UV_ECONNRESET).
 *
 * A response: an impl whose write does uv_write of the chunk and calls
 * rw_writable_write_done from the uv_write callback (rw_uv_writable_t does
 * exactly this), behind an rw_chunked_encoder_t when there is no
 * Content-Length. When the client goes away, rw_stream_destroy the writable
 * with the socket error: the pipeline feeding it destroys every stage (its
 * source's impl->destroy stops the file read, the cursor, the function's
 * response) and calls done once with that error.
 *
 * A cursor (object mode): rw_readable_init with readable_objects and a
 * free_obj that frees a document. read queues uv_queue_work (after
 * rw_stream_ref) to fetch the next batch on the threadpool; the after-work
 * callback pushes the documents one by one (rw_chunk_obj), ends at the end of
 * the cursor, then rw_stream_unref. Then rw_ndjson_serializer_t (objects ->
 * lines) -> chunked encoder -> the response, in one rw_pipeline_start.
 */
#ifndef REELWAY_STREAM_H
#define REELWAY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "reelway/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Buffers and chunks                                                        */
/* ------------------------------------------------------------------------ */

typedef struct rw_buf_s rw_buf_t;

/** Called when the last reference to an external buffer is dropped. */
typedef void (*rw_buf_free_cb)(rw_buf_t *buf);

/**
 * A reference-counted block of bytes. Created by rw_buf_new (header and bytes
 * in one allocation) or set up over memory you own with rw_buf_init_external.
 * References are counted without atomics: take and drop them on one thread
 * (the loop's), or hand the whole buffer over between threads.
 */
struct rw_buf_s {
    char *base; /**< the bytes (read-only field) */
    size_t cap; /**< how many bytes base holds (read-only field) */
    void *data; /**< free for the buffer's creator */
    /* private */
    size_t refs;
    rw_buf_free_cb free_cb; /* NULL: allocated by rw_buf_new */
};

/**
 * Allocates a buffer of cap bytes with one reference (yours). Returns NULL
 * when out of memory: cap is usually input-sized, so callers must handle it.
 */
rw_buf_t *rw_buf_new(size_t cap);

/**
 * Sets up buf (memory you own, e.g. part of a pool entry) over base[0..cap)
 * with one reference. When the last reference goes, free_cb(buf) is called
 * and buf may be reused. Never allocates.
 */
void rw_buf_init_external(rw_buf_t *buf, char *base, size_t cap, rw_buf_free_cb free_cb);

/** Takes one more reference to buf and returns it. */
rw_buf_t *rw_buf_ref(rw_buf_t *buf);

/** Drops one reference; frees (or calls free_cb) on the last. Accepts NULL. */
void rw_buf_unref(rw_buf_t *buf);

/**
 * Returns the buffer whose bytes start at base, for buffers made by rw_buf_new
 * only. Lets a uv_alloc_cb hand out rw_buf_new(n)->base and the uv_read_cb
 * find the buffer again from buf->base without a side table.
 */
rw_buf_t *rw_buf_from_base(char *base);

/**
 * A piece of data travelling through streams. Passed by value; whoever holds
 * the value owns what it references.
 * - Byte mode: base[0..len) lies inside buf (which the chunk holds one
 *   reference to), or buf is NULL and base points to memory that outlives
 *   the chunk (static data, see rw_chunk_static).
 * - Object mode: obj is the item, len is 0 and buf is NULL. The item is freed
 *   by the free_obj function of the stream that holds it when that stream is
 *   destroyed with the item still queued.
 */
typedef struct rw_chunk_s {
    union {
        char *base; /**< byte mode: first byte */
        void *obj;  /**< object mode: the item */
    };
    size_t len;    /**< byte mode: number of bytes; object mode: 0 */
    rw_buf_t *buf; /**< the reference this chunk holds, or NULL */
} rw_chunk_t;

/** A chunk over base[off..off+len) of buf, taking one new reference to buf. */
rw_chunk_t rw_chunk_of(rw_buf_t *buf, size_t off, size_t len);

/** A chunk over bytes that outlive it (string literals, ...); no reference. */
rw_chunk_t rw_chunk_static(const void *base, size_t len);

/** An object-mode chunk carrying obj. */
rw_chunk_t rw_chunk_obj(void *obj);

/**
 * A chunk over c's bytes [off, off+len), sharing c's buffer (one new
 * reference; nothing is copied). off + len must not exceed c->len.
 */
rw_chunk_t rw_chunk_slice(const rw_chunk_t *c, size_t off, size_t len);

/**
 * Copies len bytes from p into a new buffer and sets *out to a chunk over
 * them. Returns 0 or UV_ENOMEM (then *out is left untouched).
 */
int rw_chunk_copy(rw_chunk_t *out, const void *p, size_t len);

/** Drops the reference c holds (if any) and empties c. Byte mode only. */
void rw_chunk_release(rw_chunk_t *c);

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct rw_stream_s rw_stream_t;
typedef struct rw_pipeline_s rw_pipeline_t;

/** Called once the stream is fully closed; its memory may then be reused. */
typedef void (*rw_stream_close_cb)(rw_stream_t *s);

/**
 * What a stream's implementation supplies. Keep it in static storage: the
 * stream keeps the pointer. Implementations usually embed rw_stream_t in their
 * own struct and find it again with container-of arithmetic, leaving
 * rw_stream_t.data to whoever uses the stream. Every callback runs on the
 * loop thread; none is ever called after the stream is destroyed, except
 * free_obj (during destroy) and destroy itself.
 */
typedef struct rw_stream_impl_s {
    /**
     * Readable and duplex: produce data. Push up to `size` bytes (or items)
     * with rw_readable_push, now or later, or end with rw_readable_end, or
     * fail with rw_stream_destroy(s, err). read is not called again until
     * something was pushed (or rw_readable_end called), so an implementation
     * that waits for I/O just starts it and returns. Unused by transforms.
     */
    void (*read)(rw_stream_t *s, size_t size);
    /**
     * Writable and duplex: consume chunk (ownership moves to you: release it,
     * free the object, or push it on) and call rw_writable_write_done(s, err)
     * once, now or later. Writes never overlap.
     * Transform: this is the transform function. Push any output with
     * rw_readable_push and call rw_transform_done(s, err) once.
     */
    void (*write)(rw_stream_t *s, rw_chunk_t chunk);
    /**
     * Writable and duplex (optional): called once after end(), when every
     * write has completed; flush what you hold and call
     * rw_writable_final_done(s, err). 'finish' follows.
     * Transform (optional): the flush function; push what remains and call
     * rw_transform_flush_done(s, err). The readable side then ends.
     */
    void (*final)(rw_stream_t *s);
    /**
     * Optional: the stream is being destroyed (err is 0 on a normal end, or
     * the error). Stop producing, cancel what can be cancelled, release what
     * you hold. A write or final in flight keeps the stream from closing until
     * its *_done arrives: make sure it does. Any other pending work that will
     * call back into the stream later must be covered by rw_stream_ref.
     */
    void (*destroy)(rw_stream_t *s, int err);
    /**
     * Object mode: frees an item this stream still holds when it is
     * destroyed (queued pushes and queued writes). Optional: NULL means
     * items need no freeing.
     */
    void (*free_obj)(rw_stream_t *s, void *obj);
    /**
     * Optional: the stream is closing (rw_stream_close), just before its
     * close_cb. Frees what had to outlive destroy because the user may still
     * read it (a decoder's trailers).
     */
    void (*close)(rw_stream_t *s);
} rw_stream_impl_t;

/** Options at init. Zero-initialise and set what you need. */
typedef struct rw_stream_opts_s {
    /** Readable half's HWM in bytes (or items in object mode); 0: default. */
    size_t readable_hwm;
    /** Writable half's HWM in bytes (or items in object mode); 0: default. */
    size_t writable_hwm;
    bool readable_objects; /**< the readable half carries objects */
    bool writable_objects; /**< the writable half carries objects */
} rw_stream_opts_t;

/** Default HWM of a byte-mode half (64 KiB) and of an object-mode half. */
#define RW_STREAM_DEFAULT_HWM (64 * 1024)
#define RW_STREAM_DEFAULT_OBJECT_HWM 16

/**
 * Events a consumer may listen to (every member optional). Keep the struct in
 * static storage. Callbacks run on the loop thread, never inside the call that
 * caused them for end, finish, drain, error and close; on_data may run inside
 * rw_readable_push (the producer's call), which is what makes a synchronous
 * pipeline cheap. After rw_stream_close, no event reaches the listener.
 */
typedef struct rw_stream_events_s {
    /** Flowing mode: a chunk for you (ownership moves to you). */
    void (*on_data)(rw_stream_t *s, rw_chunk_t chunk);
    /** Paused mode: data (or the end) can be read with rw_readable_read. */
    void (*on_readable)(rw_stream_t *s);
    /** The readable half has delivered everything and ended. */
    void (*on_end)(rw_stream_t *s);
    /** rw_writable_write returned false earlier and the buffer is now empty. */
    void (*on_drain)(rw_stream_t *s);
    /** The writable half has ended and every write (and final) completed. */
    void (*on_finish)(rw_stream_t *s);
    /** The stream was destroyed with err (sent once, before on_close). */
    void (*on_error)(rw_stream_t *s, int err);
    /** The stream is destroyed and idle: nothing more will happen on it. */
    void (*on_close)(rw_stream_t *s);
} rw_stream_events_t;

/**
 * A stream handle: allocate it yourself (or embed it), init it with one of the
 * rw_*_init functions. The fields are private except data. Streams end
 * themselves like Node's autoDestroy: when the readable half has emitted end
 * and the writable half (if any) has finished, the stream destroys itself with
 * no error and emits close. You still call rw_stream_close to reclaim it.
 */
struct rw_stream_s {
    void *data; /**< yours: the stream's user (implementations use container-of) */
    /* private */
    struct rw__sched_s *sched;
    const rw_stream_impl_t *impl;
    const rw_stream_events_t *events;
    rw_stream_t *tick_next;
    rw_stream_close_cb close_cb;
    rw_stream_t *pipe_dst;
    rw_stream_t *pipe_src;
    rw_pipeline_t *pipeline;
    uint32_t flags;
    uint16_t pending;
    uint16_t refs;
    int err;
    struct rw__queue_s {
        rw_chunk_t *ring;
        uint32_t cap, head, count;
    } rq, wq;
    size_t rlen, rhwm, wlen, whwm, wcur;
};

/**
 * Initialises s as a readable: impl->read is required. Returns 0, UV_EINVAL
 * (missing callback) or UV_ENOMEM (the loop's scheduler could not be made).
 * The stream starts paused: call rw_readable_resume (or rw_readable_read, or
 * pipe it) to consume it.
 */
int rw_readable_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                     const rw_stream_opts_t *opts);

/** Initialises s as a writable: impl->write is required. As rw_readable_init. */
int rw_writable_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                     const rw_stream_opts_t *opts);

/**
 * Initialises s as a duplex: two independent halves, impl->read and
 * impl->write required. The stream auto-destroys when both halves are done.
 */
int rw_duplex_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                   const rw_stream_opts_t *opts);

/**
 * Initialises s as a transform: what is written goes through impl->write (the
 * transform function), which pushes output to the readable side. Backpressure
 * as Node: a transform's completion is held back while its readable side is at
 * or above its HWM, so the writable side buffers and then says stop.
 * impl->final is the optional flush. impl->read must be NULL.
 */
int rw_transform_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                      const rw_stream_opts_t *opts);

/** A pass-through transform (chunks go through untouched), as Node's PassThrough. */
int rw_passthrough_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_opts_t *opts);

/** The loop s was initialised on. */
uv_loop_t *rw_stream_loop(const rw_stream_t *s);

/**
 * Sets (or with NULL removes) the consumer's event listener. ev must stay
 * valid while set. Setting a listener with on_readable asks the stream for
 * data, as adding a 'readable' listener does in Node.
 */
void rw_stream_listen(rw_stream_t *s, const rw_stream_events_t *ev);

/**
 * Destroys s: drops what it buffers (releasing chunks, freeing objects with
 * impl->free_obj), calls impl->destroy(s, err), then (deferred) sends
 * on_error(err) if err is not 0, and on_close once nothing is in flight. A
 * second call does nothing. A destroyed stream refuses writes (RW_EDESTROYED)
 * and ignores pushes (releasing them). Destroying a stage of a pipeline tears
 * the whole pipeline down.
 */
void rw_stream_destroy(rw_stream_t *s, int err);

/**
 * Closes s: destroys it (with no error) if it is not destroyed yet, stops all
 * events to the listener, and calls close_cb (which may be NULL) once the
 * stream is idle, never from inside this call. Call it exactly once per init.
 * If s is a stage of a running pipeline, the pipeline sees the stage close
 * early and ends with RW_EPREMATURE (or the stage's error).
 */
void rw_stream_close(rw_stream_t *s, rw_stream_close_cb close_cb);

/**
 * For implementations: keep s from emitting close (and from completing
 * rw_stream_close) while asynchronous work that will touch s is pending, such
 * as a uv_fs_t or uv_work_t whose callback pushes. Balance with
 * rw_stream_unref from that work's callback.
 */
void rw_stream_ref(rw_stream_t *s);

/** Drops a hold taken with rw_stream_ref. */
void rw_stream_unref(rw_stream_t *s);

/** True once rw_stream_destroy (or close, or auto-destroy) ran. */
bool rw_stream_destroyed(const rw_stream_t *s);

/** The error s was destroyed with, or 0. */
int rw_stream_error(const rw_stream_t *s);

/* ---- readable: producer side (the implementation) ---- */

/**
 * Adds chunk (ownership moves to the stream, whatever the result) to the
 * readable half. Delivered at once to a flowing consumer whose buffer is
 * empty (on_data may run inside this call), buffered otherwise. Returns true
 * while the buffer is below the HWM, false at or above it: then stop pushing
 * until read is called again. An empty byte chunk pushes nothing (it only
 * satisfies a pending read). Pushing after rw_readable_end destroys the stream
 * with RW_EWRITEEND; pushing to a destroyed stream releases the chunk.
 */
bool rw_readable_push(rw_stream_t *s, rw_chunk_t chunk);

/** Signals the end of the data (Node's push(null)); on_end follows once
 * everything buffered was consumed. A second call does nothing. */
void rw_readable_end(rw_stream_t *s);

/* ---- readable: consumer side ---- */

/** Switches to flowing mode: buffered and future data go to on_data (or to the
 * pipe). The switch is deferred to the scheduler, as Node's resume. */
void rw_readable_resume(rw_stream_t *s);

/** Switches to paused mode: data stays buffered (up to the HWM). */
void rw_readable_pause(rw_stream_t *s);

/** True while in flowing mode. */
bool rw_readable_flowing(const rw_stream_t *s);

/**
 * Paused mode: takes data from the buffer. In byte mode, at most max bytes
 * (0: a whole chunk), slicing a larger chunk without copying; in object mode,
 * one item. Returns 1 and sets *out (you own it); 0 when nothing is buffered
 * yet (the implementation was asked for more; on_readable follows); UV_EOF
 * once ended and empty; the stream's error (or RW_EDESTROYED) if destroyed.
 */
int rw_readable_read(rw_stream_t *s, size_t max, rw_chunk_t *out);

/** Bytes (or items) buffered in the readable half. */
size_t rw_readable_length(const rw_stream_t *s);

/** True once on_end was emitted. */
bool rw_readable_ended(const rw_stream_t *s);

/* ---- writable: consumer side ---- */

/**
 * Writes chunk (ownership moves to the stream, whatever the result). The
 * first write goes to impl->write at once; later ones queue while one is in
 * flight. Returns 1 while the bytes (items) written but not yet completed stay
 * below the HWM after the call, 0 once they reach it (stop, and wait for
 * on_drain), RW_EWRITEEND after rw_writable_end (the stream is then destroyed
 * with that error, as Node does) or RW_EDESTROYED if destroyed. Unlike Node,
 * a write the implementation completed synchronously does not count, so a
 * synchronous sink never forces a drain round trip. Empty byte chunks are
 * dropped.
 */
int rw_writable_write(rw_stream_t *s, rw_chunk_t chunk);

/**
 * Ends the writable half: once every write completed, impl->final runs, then
 * on_finish. Returns 0, RW_EWRITEEND if already ended (nothing changes) or
 * RW_EDESTROYED.
 */
int rw_writable_end(rw_stream_t *s);

/** Bytes (or items) written but not yet completed by the implementation. */
size_t rw_writable_length(const rw_stream_t *s);

/** True once on_finish was emitted. */
bool rw_writable_finished(const rw_stream_t *s);

/* ---- writable: implementation side ---- */

/**
 * Completes the write in flight (err 0, or an error that destroys the stream).
 * May be called from inside impl->write. The next buffered write may start
 * before this returns.
 */
void rw_writable_write_done(rw_stream_t *s, int err);

/** Completes impl->final (err 0, or an error that destroys the stream). */
void rw_writable_final_done(rw_stream_t *s, int err);

/**
 * Transform: the chunk handed to the transform function has been consumed
 * (its output pushed). err destroys the stream. Backpressure is applied here.
 */
void rw_transform_done(rw_stream_t *s, int err);

/** Transform: the flush function is done; the readable side ends (err 0). */
void rw_transform_flush_done(rw_stream_t *s, int err);

/* ------------------------------------------------------------------------ */
/* pipe and pipeline                                                         */
/* ------------------------------------------------------------------------ */

/**
 * Pipes src's readable half into dst's writable half, as Node's
 * src.pipe(dst): data flows with backpressure (src pauses when dst says stop,
 * resumes on drain) and dst is ended when src ends. If dst is destroyed, src
 * is unpiped and paused (not destroyed: that is what pipelines add). A
 * stream pipes into one destination at most. Returns 0, UV_EINVAL (wrong
 * kinds, object mode mismatch) or UV_EBUSY (already piped).
 */
int rw_stream_pipe(rw_stream_t *src, rw_stream_t *dst);

/** Undoes rw_stream_pipe and pauses src. */
void rw_stream_unpipe(rw_stream_t *src);

/** Called once when a pipeline is over: err 0 when the destination finished. */
typedef void (*rw_pipeline_cb)(rw_pipeline_t *p, int err);

/** A running pipeline; allocate it yourself; keep it until done is called. */
struct rw_pipeline_s {
    void *data; /**< yours */
    /* private */
    rw_pipeline_cb done;
    rw_stream_t *first;
    unsigned stages;
};

/**
 * Connects stages[0] (a readable) through stages[1..n-2] (duplexes or
 * transforms) to stages[n-1] (a writable), n >= 2, and starts the flow.
 * Backpressure runs through every stage. done(p, err) is called exactly once,
 * from the scheduler (never inside this call):
 * - with 0 when every stage has completed its part (the source ended, each
 *   middle stage ended and finished, the destination finished);
 * - with the first error of any stage, or RW_EPREMATURE when a stage was
 *   destroyed with no error before completing (a destination destroyed
 *   because the client went away, a source closed by its owner). Every stage
 *   is then destroyed with that error before done runs, so each one's
 *   impl->destroy has stopped its work (a cursor, a file read, a function's
 *   response); a stage with a write in flight still closes only when that
 *   write completes (close the socket under it).
 * After done the pipeline no longer touches p or the stages: close them from
 * done if you like. The stages array itself need not outlive the call.
 * Returns 0, or UV_EINVAL / UV_EBUSY as rw_stream_pipe (then nothing was
 * changed and done is never called).
 */
int rw_pipeline_start(rw_pipeline_t *p, rw_stream_t *const *stages, size_t n, rw_pipeline_cb done);

/** rw_pipeline_start with the stages as arguments, ended by NULL (at most 32). */
int rw_pipeline(rw_pipeline_t *p, rw_pipeline_cb done, rw_stream_t *first, ...);

/**
 * Releases the scheduler reelway made for loop (see "Deferred events"). Call
 * it on the loop's thread once every stream on the loop has been closed (its
 * close_cb called), then run the loop once more (uv_run) so the scheduler's
 * handle finishes closing, then uv_loop_close. Returns 0 (also when loop had
 * no scheduler) or UV_EBUSY if streams on the loop are still open (nothing is
 * changed then). A later rw_*_init on the loop makes a new scheduler.
 */
int rw_stream_loop_close(uv_loop_t *loop);

/* ------------------------------------------------------------------------ */
/* Adapters                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Every adapter embeds its rw_stream_t as the member `stream`: pass
 * &adapter->stream to the stream and pipeline functions, and close it with
 * rw_stream_close(&adapter->stream, cb). Private members follow `stream`.
 */

/* ---- libuv stream handles (uv_tcp_t, uv_pipe_t, uv_tty_t) ---- */

/**
 * A readable over a connected libuv stream handle: reads with uv_read_start
 * into buffers of chunk_size bytes (each read becomes one chunk, no copy) and
 * stops reading (uv_read_stop) while the consumer is at its HWM. UV_EOF ends
 * the stream; a read error destroys it with that error. The handle stays
 * yours: the adapter never closes it, but sets handle->data to itself while
 * reading; close the handle only after the adapter's close_cb (or close the
 * handle first and then the adapter: reads simply stop).
 */
typedef struct rw_uv_readable_s {
    rw_stream_t stream;
    /* private */
    uv_stream_t *handle;
    size_t chunk_size;
    bool reading;
} rw_uv_readable_t;

/** chunk_size 0 means 64 KiB. opts may be NULL. Returns 0 or as rw_readable_init. */
int rw_uv_readable_init(uv_loop_t *loop, rw_uv_readable_t *r, uv_stream_t *handle,
                        size_t chunk_size, const rw_stream_opts_t *opts);

/**
 * A writable over a connected libuv stream handle: one uv_write per chunk,
 * completed when uv_write completes; on end, a uv_shutdown (unless
 * no_shutdown) before on_finish. A write error destroys the stream. The handle
 * stays yours; when the peer goes away, destroy the writable (a pipeline then
 * stops its source) and close the handle: a uv_write in flight completes with
 * UV_ECANCELED and lets the writable close.
 */
typedef struct rw_uv_writable_s {
    rw_stream_t stream;
    /* private */
    uv_stream_t *handle;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    rw_chunk_t inflight;
    bool no_shutdown;
} rw_uv_writable_t;

/** no_shutdown: do not uv_shutdown at end. opts may be NULL. */
int rw_uv_writable_init(uv_loop_t *loop, rw_uv_writable_t *w, uv_stream_t *handle, bool no_shutdown,
                        const rw_stream_opts_t *opts);

/* ---- files (uv_fs_* on the threadpool; the loop never blocks) ---- */

/**
 * A readable over the bytes [offset, offset + length) of a file, read in
 * chunks of chunk_size with uv_fs_read. One read is kept ahead while the
 * consumer is below its HWM, so disk and consumer overlap. If the file ends
 * before offset + length the stream fails with RW_ETRUNC (length -1: read to
 * the end of the file). Opened from a path (asynchronously; the adapter owns
 * and closes the fd) or over an fd you own.
 */
typedef struct rw_file_readable_s {
    rw_stream_t stream;
    /* private */
    uv_fs_t req;
    rw_buf_t *inbuf;
    char *path;
    uv_file fd;
    bool own_fd, busy, eof, want;
    int64_t pos, end;
    size_t chunk_size;
} rw_file_readable_t;

/**
 * Reads [offset, offset+length) of the file at path (copied), opened on the
 * threadpool when first read; an open error destroys the stream with it.
 * length -1: to the end. chunk_size 0: 64 KiB. opts may be NULL.
 * Returns 0, UV_EINVAL, UV_ENOMEM.
 */
int rw_file_readable_open(uv_loop_t *loop, rw_file_readable_t *f, const char *path, int64_t offset,
                          int64_t length, size_t chunk_size, const rw_stream_opts_t *opts);

/** As rw_file_readable_open over fd, which stays yours (never closed here). */
int rw_file_readable_init(uv_loop_t *loop, rw_file_readable_t *f, uv_file fd, int64_t offset,
                          int64_t length, size_t chunk_size, const rw_stream_opts_t *opts);

/**
 * A writable into a file with uv_fs_write; at end it fsyncs (uv_fs_fsync) and
 * only then emits finish, so finish means "on disk". Opened from a path with
 * flags/mode (asynchronously on first write or at end; the adapter owns and
 * closes the fd), or over an fd you own.
 */
typedef struct rw_file_writable_s {
    rw_stream_t stream;
    /* private */
    uv_fs_t req;
    rw_chunk_t cur;
    size_t cur_off;
    char *path;
    int flags, mode;
    uv_file fd;
    bool own_fd, busy;
    int64_t pos;
    int step;
} rw_file_writable_t;

/**
 * Writes to path (copied), opened with flags (e.g. UV_FS_O_WRONLY |
 * UV_FS_O_CREAT | UV_FS_O_TRUNC) and mode on the threadpool. opts may be NULL.
 * Returns 0, UV_EINVAL, UV_ENOMEM.
 */
int rw_file_writable_open(uv_loop_t *loop, rw_file_writable_t *f, const char *path, int flags,
                          int mode, const rw_stream_opts_t *opts);

/** Writes to fd (yours, never closed here) starting at offset. */
int rw_file_writable_init(uv_loop_t *loop, rw_file_writable_t *f, uv_file fd, int64_t offset,
                          const rw_stream_opts_t *opts);

/* ---- HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1) ---- */

/**
 * Encoder transform (bytes -> chunked bytes): each non-empty input chunk
 * becomes "<hex size>\r\n" + the same bytes (not copied) + "\r\n"; at end,
 * "0\r\n", the trailer fields added with rw_chunked_encoder_trailer, "\r\n".
 * The size lines come from small shared arenas, not one allocation per chunk.
 */
typedef struct rw_chunked_encoder_s {
    rw_stream_t stream;
    /* private */
    rw_buf_t *arena;
    size_t arena_used;
    char *trailers;
    size_t trailers_len;
} rw_chunked_encoder_t;

/** opts may be NULL (byte mode is forced). Returns 0 or as rw_transform_init. */
int rw_chunked_encoder_init(uv_loop_t *loop, rw_chunked_encoder_t *e, const rw_stream_opts_t *opts);

/**
 * Adds the trailer field "name: value" sent after the last chunk (call before
 * the encoder flushes, e.g. before rw_writable_end on it). Returns 0, UV_EINVAL
 * (empty name, CR/LF/colon where not allowed) or UV_ENOMEM.
 */
int rw_chunked_encoder_trailer(rw_chunked_encoder_t *e, const char *name, const char *value);

/**
 * Decoder transform (chunked bytes -> body bytes, sliced from the input
 * without copying). Strict: sizes are hex without sign or overflow, lines end
 * in CRLF, chunk extensions are skipped, size lines are limited to 1 KiB and the
 * trailer section to max_trailers bytes. Errors: RW_ECHUNK (malformed),
 * RW_ELIMIT (trailers too large), RW_ETRUNC (input ended before the last
 * chunk and its trailers), RW_ECHUNK for bytes after the end.
 */
typedef struct rw_chunked_decoder_s {
    rw_stream_t stream;
    /* private */
    uint64_t remaining;
    size_t line_len, max_trailers;
    char *trailers;
    size_t trailers_len;
    int state;
    unsigned digits;
    bool in_ext;
} rw_chunked_decoder_t;

/** max_trailers 0 means 8 KiB. opts may be NULL. */
int rw_chunked_decoder_init(uv_loop_t *loop, rw_chunked_decoder_t *d, size_t max_trailers,
                            const rw_stream_opts_t *opts);

/**
 * The raw trailer section received ("Name: value\r\n" lines, without the
 * final empty line), valid until the decoder is closed; *len is set. NULL
 * before the decoder has ended or when there were none.
 */
const char *rw_chunked_decoder_trailers(const rw_chunked_decoder_t *d, size_t *len);

/* ---- NDJSON (newline-delimited JSON) ---- */

/**
 * Turns one line (without its "\n" or "\r\n", never empty) into an object for
 * the framer. line is only valid during the call. Return 0 and set *obj, or a
 * negative error (e.g. RW_EPARSE) that destroys the framer.
 */
typedef int (*rw_ndjson_decode_fn)(void *ctx, const char *line, size_t len, void **obj);

/**
 * Turns one object into the bytes of its line, without the newline: set *out
 * (ownership moves to the serializer) and return 0, or a negative error that
 * destroys the serializer. The serializer frees obj afterwards.
 */
typedef int (*rw_ndjson_encode_fn)(void *ctx, void *obj, rw_chunk_t *out);

/** Frees an object made by a decode function or fed to a serializer. */
typedef void (*rw_ndjson_free_fn)(void *ctx, void *obj);

/**
 * The default object: a line, NUL-terminated (data[len] == 0), one allocation.
 * The framer makes these when no decode function is given; the serializer
 * takes them when no encode function is given. Free with free().
 */
typedef struct rw_ndjson_line_s {
    size_t len;
    char data[];
} rw_ndjson_line_t;

/** Codec of an NDJSON framer or serializer; zero-initialise for the defaults. */
typedef struct rw_ndjson_codec_s {
    rw_ndjson_decode_fn decode; /**< framer: NULL makes rw_ndjson_line_t */
    rw_ndjson_encode_fn encode; /**< serializer: NULL takes rw_ndjson_line_t */
    rw_ndjson_free_fn free_obj; /**< NULL: free() */
    void *ctx;                  /**< passed to the three functions */
} rw_ndjson_codec_t;

/**
 * Framer transform: bytes in, one object out per line. Lines end in "\n"
 * (a "\r" before it is dropped); empty lines are skipped; a last line without
 * newline counts. A line longer than max_line bytes fails with RW_ELINE
 * (without buffering more than max_line bytes). Lines that sit inside one
 * input chunk are decoded in place; only lines split across chunks are
 * copied into the framer's line buffer.
 */
typedef struct rw_ndjson_framer_s {
    rw_stream_t stream;
    /* private */
    rw_ndjson_codec_t codec;
    char *line;
    size_t line_len, line_cap, max_line;
} rw_ndjson_framer_t;

/** max_line 0 means 1 MiB. codec and opts may be NULL. Objects out (forced). */
int rw_ndjson_framer_init(uv_loop_t *loop, rw_ndjson_framer_t *f, size_t max_line,
                          const rw_ndjson_codec_t *codec, const rw_stream_opts_t *opts);

/** Serializer transform: objects in, one line ("...\n") out per object. */
typedef struct rw_ndjson_serializer_s {
    rw_stream_t stream;
    /* private */
    rw_ndjson_codec_t codec;
} rw_ndjson_serializer_t;

/** codec and opts may be NULL. Objects in, bytes out (forced). */
int rw_ndjson_serializer_init(uv_loop_t *loop, rw_ndjson_serializer_t *s,
                              const rw_ndjson_codec_t *codec, const rw_stream_opts_t *opts);

/* ---- byte limit ---- */

/**
 * Pass-through that fails with RW_ELIMIT as soon as more than limit bytes
 * have been written to it (none of the offending chunk is passed on).
 */
typedef struct rw_limit_s {
    rw_stream_t stream;
    /* private */
    uint64_t limit, seen;
} rw_limit_t;

/** opts may be NULL. */
int rw_limit_init(uv_loop_t *loop, rw_limit_t *l, uint64_t limit, const rw_stream_opts_t *opts);

/** Bytes that went through so far. */
uint64_t rw_limit_count(const rw_limit_t *l);

/* ---- SHA-256 (OpenSSL EVP) ---- */

/**
 * Pass-through that hashes every byte with SHA-256. The digest is available
 * once the transform has flushed (its writable side finished; always by the
 * time a pipeline's done is called with 0).
 */
typedef struct rw_sha256_s {
    rw_stream_t stream;
    /* private */
    struct evp_md_ctx_st *md;
    unsigned char digest[32];
    bool have_digest;
} rw_sha256_t;

/** opts may be NULL. Returns 0, RW_ECRYPTO, or as rw_transform_init. */
int rw_sha256_init(uv_loop_t *loop, rw_sha256_t *h, const rw_stream_opts_t *opts);

/**
 * Copies the digest into out[32] and, if hex is not NULL, its lowercase hex
 * into hex[65] (NUL-terminated). Returns 0, or UV_EAGAIN before the end.
 */
int rw_sha256_digest(const rw_sha256_t *h, unsigned char out[32], char hex[65]);

/* ---- gzip (zlib) ---- */

/**
 * Compresses to the gzip format (RFC 1952). level -1 is zlib's default.
 * sync_flush makes every written chunk come out complete (Z_SYNC_FLUSH), for
 * streams read live such as NDJSON feeds. Output chunks are up to 16 KiB;
 * zlib errors give RW_EZLIB. zlib's state (~270 KiB) is allocated at init and
 * freed when the stream is destroyed.
 */
typedef struct rw_gzip_s {
    rw_stream_t stream;
    /* private */
    void *z;
    rw_buf_t *out;
    size_t out_start;
    bool sync_flush;
} rw_gzip_t;

/** opts may be NULL. Returns 0, RW_EZLIB, UV_ENOMEM or as rw_transform_init. */
int rw_gzip_init(uv_loop_t *loop, rw_gzip_t *g, int level, bool sync_flush,
                 const rw_stream_opts_t *opts);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_STREAM_H */
