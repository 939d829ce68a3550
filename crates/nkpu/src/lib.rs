//! The Network Unlock wire protocol (MS-NKPU). Work in progress.
