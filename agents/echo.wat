;; echo: a caxton-v1 agent that replies with the incoming message, streamed in two chunks.
;;
;; The host calls caxton_alloc(len), writes the message JSON there, then calls
;; handle_message(ptr, len). The reply is the first half of the message, then the rest,
;; each sent with caxton.reply (one streamed chunk per call).
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (import "caxton" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  ;; Messages are written at a fixed offset: the host writes one message, then calls
  ;; handle_message with it, so one buffer is enough and nothing leaks between messages.
  (global $buffer i32 (i32.const 1024))
  (data (i32.const 0) "echo: replying")

  (func (export "caxton_alloc") (param $len i32) (result i32)
    (local $needed i32)
    ;; pages needed to hold [buffer, buffer + len)
    (local.set $needed
      (i32.shr_u (i32.add (i32.add (global.get $buffer) (local.get $len)) (i32.const 65535))
                 (i32.const 16)))
    (if (i32.gt_u (local.get $needed) (memory.size))
      (then
        ;; memory.grow returns -1 past [limits].max_memory_bytes: hand back -1 and let the
        ;; host report the bad pointer.
        (if (i32.eq (memory.grow (i32.sub (local.get $needed) (memory.size))) (i32.const -1))
          (then (return (i32.const -1))))))
    (global.get $buffer))

  (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
    (local $half i32)
    (call $log (i32.const 0) (i32.const 0) (i32.const 14))
    (local.set $half (i32.shr_u (local.get $len) (i32.const 1)))
    (call $reply (local.get $ptr) (local.get $half))
    (call $reply (i32.add (local.get $ptr) (local.get $half))
                 (i32.sub (local.get $len) (local.get $half)))
    (i32.const 0)))
