;; counter: a stateful caxton-v1 agent. Each message increments a counter kept in guest
;; memory and the reply is {"count":N}, streamed as three chunks. The instance (and so the
;; count) lives as long as the agent version, and starts again at 0 when the instance is
;; re-created (after a trap, or on a new version).
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (import "caxton" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  ;; Layout: [0, 4) the counter; [16, 32) digits scratch; [64, ...) text; [1024, ...) message.
  (data (i32.const 64) "{\"count\":")   ;; 9 bytes at 64
  (data (i32.const 80) "}")             ;; 1 byte at 80
  (data (i32.const 96) "counter ready") ;; 13 bytes at 96

  (func (export "agent_init") (result i32)
    (i32.store (i32.const 0) (i32.const 0))
    (call $log (i32.const 1) (i32.const 96) (i32.const 13))
    (i32.const 0))

  (func (export "caxton_alloc") (param $len i32) (result i32)
    (local $needed i32)
    (local.set $needed
      (i32.shr_u (i32.add (i32.add (i32.const 1024) (local.get $len)) (i32.const 65535))
                 (i32.const 16)))
    (if (i32.gt_u (local.get $needed) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $needed) (memory.size))) (i32.const -1))
          (then (return (i32.const -1))))))
    (i32.const 1024))

  ;; Write the decimal digits of $n ending just before address 32; return the first digit's address.
  (func $format (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 32))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (i32.ne (local.get $n) (i32.const 0))))
    (local.get $p))

  (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
    (local $count i32)
    (local $start i32)
    (local.set $count (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (i32.store (i32.const 0) (local.get $count))
    (local.set $start (call $format (local.get $count)))
    (call $reply (i32.const 64) (i32.const 9))
    (call $reply (local.get $start) (i32.sub (i32.const 32) (local.get $start)))
    (call $reply (i32.const 80) (i32.const 1))
    (i32.const 0)))
