-- Each service owns its database.
CREATE DATABASE orders;
CREATE DATABASE rewards;
