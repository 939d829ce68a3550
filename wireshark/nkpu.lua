-- nkpu.lua: a Wireshark dissector for BitLocker Network Unlock (MS-NKPU), shipped with nulab.
--
-- It runs after DHCP (a postdissector) on UDP 67/68 and 546/547 and shows as named fields:
--   DHCPv4: option 43 sub-option 1 (the certificate thumbprint) and sub-option 2 (the first
--           128 bytes of the key protector in a request, the 60-byte reply in a reply);
--           option 125 (enterprise 311) sub-option 1 (the last 128 bytes of the key protector);
--   DHCPv6: option 17 (enterprise 311) sub-options 1 (thumbprint) and 2 (key protector, or the
--           60-byte reply).
-- With a key log (the NKPU_SESSION lines nulab's scenario runs write as nkpu-keys.log, the
-- format of `nulab doctor`'s key log), it shows each exchange's session key SK: a request is
-- matched by its thumbprint and the first 16 bytes of its key protector, a reply by the
-- transaction id of a request matched earlier in the capture. It does not decrypt the reply
-- (AES-256-CCM is not available to Wireshark's Lua): `nulab packet decode` does that.
--
-- Install: `nulab wireshark install` (into Wireshark's personal Lua plugins folder; it keeps a
-- different nkpu.lua already there unless --force), or copy this file there yourself:
--   mkdir -p ~/.local/lib/wireshark/plugins && cp wireshark/nkpu.lua ~/.local/lib/wireshark/plugins/
-- or load it for one run: tshark -X lua_script:wireshark/nkpu.lua -r capture.pcap
-- The key log: Edit > Preferences > Protocols > NKPU > Key log file, or
--   tshark -X lua_script:wireshark/nkpu.lua -o nkpu.keylog:path/to/nkpu-keys.log -r capture.pcap

local nkpu = Proto("nkpu", "BitLocker Network Unlock")

local pf = {
    kind = ProtoField.string("nkpu.kind", "Message"),
    family = ProtoField.string("nkpu.family", "Transport"),
    xid = ProtoField.string("nkpu.xid", "Transaction id"),
    thumbprint = ProtoField.bytes("nkpu.thumbprint", "Certificate thumbprint"),
    kp_first = ProtoField.bytes("nkpu.kp.first_half", "Key protector, first 128 bytes (option 43 sub-option 2)"),
    kp_second = ProtoField.bytes("nkpu.kp.second_half", "Key protector, last 128 bytes (option 125 sub-option 1)"),
    kp = ProtoField.bytes("nkpu.kp", "Key protector (256 bytes)"),
    reply = ProtoField.bytes("nkpu.reply", "Key protector reply (tag, then AES-256-CCM ciphertext)"),
    reply_tag = ProtoField.bytes("nkpu.reply.tag", "Tag"),
    reply_ciphertext = ProtoField.bytes("nkpu.reply.ciphertext", "Ciphertext of CK"),
    session_key = ProtoField.string("nkpu.session_key", "Session key SK (from the key log)"),
    keylog_line = ProtoField.uint32("nkpu.keylog.line", "Key log line"),
}
nkpu.fields = {
    pf.kind, pf.family, pf.xid, pf.thumbprint, pf.kp_first, pf.kp_second, pf.kp, pf.reply,
    pf.reply_tag, pf.reply_ciphertext, pf.session_key, pf.keylog_line,
}

nkpu.prefs.keylog = Pref.string("Key log file", "", "NKPU_SESSION lines: thumbprint, key protector prefix, session key")

local f_udp = Field.new("udp")
local f_srcport = Field.new("udp.srcport")
local f_dstport = Field.new("udp.dstport")

-- The key log, read once per file name: entries by thumbprint and key protector prefix.
local keylog = { path = nil, by_request = {} }
local sessions_by_xid = {}

local function load_keylog()
    local path = nkpu.prefs.keylog
    if path == nil or path == "" then
        path = os.getenv("NKPU_KEYLOG") or ""
    end
    if path == keylog.path then
        return
    end
    keylog = { path = path, by_request = {} }
    if path == "" then
        return
    end
    local file = io.open(path, "r")
    if file == nil then
        return
    end
    local n = 0
    for line in file:lines() do
        n = n + 1
        local thumb, prefix, key = line:match("^%s*NKPU_SESSION%s+(%x+)%s+(%x+)%s+(%x+)%s*$")
        if thumb ~= nil and #thumb == 40 and #prefix == 32 and #key == 64 then
            keylog.by_request[thumb:lower() .. ":" .. prefix:lower()] = { key = key:lower(), line = n }
        end
    end
    file:close()
end

function nkpu.init()
    sessions_by_xid = {}
    keylog.path = nil
end

local function hex(tvbr)
    return tostring(tvbr:bytes()):lower()
end

-- Sub-options of `width` bytes of code and of length in tvb range [from, to).
local function suboptions(tvb, from, to, width)
    local list = {}
    local at = from
    while at + 2 * width <= to do
        local code = tvb(at, width):uint()
        local len = tvb(at + width, width):uint()
        local data = at + 2 * width
        if data + len > to then
            break
        end
        list[#list + 1] = { code = code, at = data, len = len }
        at = data + len
    end
    return list
end

local function show_session(tree, family, xid, thumb_hex, kp_prefix_hex)
    load_keylog()
    local entry = nil
    if thumb_hex ~= nil then
        entry = keylog.by_request[thumb_hex .. ":" .. kp_prefix_hex]
        if entry ~= nil then
            sessions_by_xid[family .. xid] = entry
        end
    else
        entry = sessions_by_xid[family .. xid]
    end
    if entry ~= nil then
        tree:add(pf.session_key, entry.key)
        tree:add(pf.keylog_line, entry.line)
    end
end

local function show_reply(tree, tvb, at)
    local item = tree:add(pf.reply, tvb(at, 60))
    item:add(pf.reply_tag, tvb(at, 16))
    item:add(pf.reply_ciphertext, tvb(at + 16, 44))
end

local function dissect_v4(tvb, pinfo, root, base)
    if tvb:len() < base + 240 or tvb(base + 236, 4):uint() ~= 0x63825363 then
        return
    end
    local xid = string.format("%08x", tvb(base + 4, 4):uint())
    local at = base + 240
    local opt43, opt125 = nil, nil
    while at < tvb:len() do
        local code = tvb(at, 1):uint()
        if code == 255 then
            break
        end
        if code == 0 then
            at = at + 1
        else
            if at + 2 > tvb:len() then
                break
            end
            local len = tvb(at + 1, 1):uint()
            if at + 2 + len > tvb:len() then
                break
            end
            if code == 43 then
                opt43 = { at = at + 2, len = len }
            elseif code == 125 then
                opt125 = { at = at + 2, len = len }
            end
            at = at + 2 + len
        end
    end
    if opt43 == nil then
        return
    end
    local subs = suboptions(tvb, opt43.at, opt43.at + opt43.len, 1)
    local thumb, first, reply = nil, nil, nil
    for _, s in ipairs(subs) do
        if s.code == 1 and s.len == 20 then
            thumb = s
        elseif s.code == 2 and s.len == 128 then
            first = s
        elseif s.code == 2 and s.len == 60 then
            reply = s
        end
    end
    if thumb == nil and reply == nil then
        return
    end
    local tree = root:add(nkpu, tvb(opt43.at, opt43.len))
    tree:add(pf.family, "DHCPv4")
    tree:add(pf.xid, xid)
    if thumb ~= nil then
        tree:add(pf.kind, "request")
        tree:add(pf.thumbprint, tvb(thumb.at, 20))
        if first ~= nil then
            tree:add(pf.kp_first, tvb(first.at, 128))
        end
        if opt125 ~= nil and opt125.len >= 5 and tvb(opt125.at, 4):uint() == 311 then
            for _, s in ipairs(suboptions(tvb, opt125.at + 5, opt125.at + opt125.len, 1)) do
                if s.code == 1 and s.len == 128 then
                    tree:add(pf.kp_second, tvb(s.at, 128))
                end
            end
        end
        if first ~= nil then
            show_session(tree, "v4", xid, hex(tvb(thumb.at, 20)), hex(tvb(first.at, 16)))
        end
        pinfo.cols.info:append(" [Network Unlock request]")
    else
        tree:add(pf.kind, "reply")
        show_reply(tree, tvb, reply.at)
        show_session(tree, "v4", xid, nil, nil)
        pinfo.cols.info:append(" [Network Unlock reply]")
    end
end

local function dissect_v6(tvb, pinfo, root, base)
    if tvb:len() < base + 4 then
        return
    end
    local xid = string.format("%06x", tvb(base + 1, 3):uint())
    local at = base + 4
    while at + 4 <= tvb:len() do
        local code = tvb(at, 2):uint()
        local len = tvb(at + 2, 2):uint()
        if at + 4 + len > tvb:len() then
            break
        end
        if code == 17 and len >= 4 and tvb(at + 4, 4):uint() == 311 then
            local thumb, kp, reply = nil, nil, nil
            for _, s in ipairs(suboptions(tvb, at + 8, at + 4 + len, 2)) do
                if s.code == 1 and s.len == 20 then
                    thumb = s
                elseif s.code == 2 and s.len == 256 then
                    kp = s
                elseif s.code == 2 and s.len == 60 then
                    reply = s
                end
            end
            if thumb == nil and reply == nil then
                return
            end
            local tree = root:add(nkpu, tvb(at, 4 + len))
            tree:add(pf.family, "DHCPv6")
            tree:add(pf.xid, xid)
            if thumb ~= nil then
                tree:add(pf.kind, "request")
                tree:add(pf.thumbprint, tvb(thumb.at, 20))
                if kp ~= nil then
                    tree:add(pf.kp, tvb(kp.at, 256))
                    show_session(tree, "v6", xid, hex(tvb(thumb.at, 20)), hex(tvb(kp.at, 16)))
                end
                pinfo.cols.info:append(" [Network Unlock request]")
            else
                tree:add(pf.kind, "reply")
                show_reply(tree, tvb, reply.at)
                show_session(tree, "v6", xid, nil, nil)
                pinfo.cols.info:append(" [Network Unlock reply]")
            end
            return
        end
        at = at + 4 + len
    end
end

function nkpu.dissector(tvb, pinfo, root)
    local udp = f_udp()
    if udp == nil then
        return
    end
    local src, dst = f_srcport()(), f_dstport()()
    local base = udp.offset + 8
    if src == 67 or src == 68 or dst == 67 or dst == 68 then
        dissect_v4(tvb, pinfo, root, base)
    elseif src == 546 or src == 547 or dst == 546 or dst == 547 then
        dissect_v6(tvb, pinfo, root, base)
    end
end

register_postdissector(nkpu)
