-- Writes a batch's record (store/upstash/mod.rs put_batch): one SET, with the record's absolute expiry.
-- KEYS[1] the batch record (st:B:<owner>:<id>); ARGV[1] the record ("B1 <job id or -> ...\n<json>"),
-- ARGV[2] its expiry (epoch ms).
check_expiry(ARGV[2], 'batch', 0)
C('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
